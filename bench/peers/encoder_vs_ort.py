#!/usr/bin/env python3
"""A transformer encoder run by lopper (sparse and densified) against ONNX Runtime on the dense
network, checked for agreement first and timed side by side in one run.

The script reads an encoder .lop (or a Hugging Face BERT folder) with the plain `safetensors`
library, densifies every Linear from its stored format (bench/peers/lop_vs_ort.py's reader),
and writes the equivalent dense ONNX graph (opset 17; embeddings, LayerNormalization, attention
as MatMul/Softmax over [B, heads, S, S], GELU as 0.5·x·(1 + Erf(x/√2)), mean pooling, L2
normalisation when the model has it). Then:
  check: tokenizes held-out sentences with the model's tokenizer.json (`tokenizers` package),
         runs ORT one sentence at a time and compares with `lopper embed MODEL --json --file`
         (exit 1 over 1e-4);
  bench: runs `lopper bench MODEL --batch .. --threads .. --seq S --json`, then times ORT on
         seeded random ids [B, S] at the same batch sizes and thread counts (median of samples)
         and prints both. `--dense DIR_OR_LOP` builds ORT from another model's weights (the
         original dense model), so the baseline is the unpruned network.
`--save-onnx PATH` also writes MODEL's ONNX file, zeros included (for other engines, e.g.
DeepSparse: bench/peers/deepsparse_encoder.py).

Layouts: Linear weights are [out, in] in the file (PyTorch); the ONNX MatMul takes xW, so
the builder stores Wᵀ [in, out]. Activations are [B, S, H].

Example (from the repository root):
  python3 bench/peers/encoder_vs_ort.py /var/cache/lopper/bert/sparsegpt-0.9.lop \\
      --dense "$(scripts/fetch-minilm.sh)" --batch 1,8 --threads 1,2 --json out.jsonl
`--self-test` checks the ONNX builder against a numpy forward pass on a tiny random encoder.
Needs: pip install numpy onnx onnxruntime safetensors tokenizers
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lop_vs_ort import (Fail, dense_weight, default_lopper, json_lines, machine_info,  # noqa: E402
                        median_ns, ort_session, run_lopper)

LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")


def load_encoder(path):
    """(config dict, {name: float32 array}, normalize, tokenizer json text) from a .lop or folder."""
    from safetensors import safe_open

    if os.path.isdir(path):
        cfg = json.load(open(os.path.join(path, "config.json")))
        modules = os.path.join(path, "modules.json")
        normalize = os.path.exists(modules) and any(
            m.get("type", "").endswith("Normalize") for m in json.load(open(modules)))
        t = {}
        with safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
            for k in f.keys():
                t[k[5:] if k.startswith("bert.") else k] = f.get_tensor(k)
        tok = open(os.path.join(path, "tokenizer.json")).read()
        return cfg, t, normalize, tok
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        if "bert" not in meta:
            raise Fail(f"{path}: not an encoder .lop (no __metadata__.bert)")
        m = json.loads(meta["bert"])
        names = set(f.keys())

        def get(n):
            if n not in names:
                raise Fail(f"{path}: tensor '{n}' is missing")
            return f.get_tensor(n)

        t = {n: get(n) for n in names if n.startswith("embeddings.") or n.endswith(".bias")
             or "LayerNorm" in n}
        for n, spec in m["weights"].items():
            t[n] = dense_weight(get, n, spec)
        tok = bytes(get("tokenizer.json")).decode()
    return m["config"], t, m["normalize"], tok


def build_onnx(cfg, t, normalize):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    dh, eps = H // heads, float(cfg.get("layer_norm_eps", 1e-12))
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def const_i64(name, vals):
        inits.append(numpy_helper.from_array(np.array(vals, np.int64), name))
        return name

    def linear(x, name, out):
        w = init(name + ".wT", t[name + ".weight"].T)
        b = init(name + ".b", t[name + ".bias"])
        return node("Add", [node("MatMul", [x, w], out + "_mm"), b], out)

    def ln(x, name, out):
        g = init(name + ".g", t[name + ".weight"])
        b = init(name + ".beta", t[name + ".bias"])
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=eps)

    word = init("word", t["embeddings.word_embeddings.weight"])
    pos = init("pos", t["embeddings.position_embeddings.weight"])
    tt0 = init("tt0", t["embeddings.token_type_embeddings.weight"][0])
    shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Slice", [shape, const_i64("c1", [1]), const_i64("c2", [2])], "seq")
    posr = node("Slice", [pos, const_i64("c0", [0]), seq, const_i64("ax0", [0])], "pos_rows")
    e = node("Add", [node("Gather", [word, "input_ids"], "we"), posr], "e1")
    x = ln(node("Add", [e, tt0], "e2"), "embeddings.LayerNorm", "x0")
    split = const_i64("split_shape", [0, 0, heads, dh])
    merge = const_i64("merge_shape", [0, 0, H])
    scale = init("scale", np.array(1.0 / np.sqrt(dh)))
    half, one, rsqrt2 = init("half", np.array(0.5)), init("one", np.array(1.0)), init("rsqrt2", np.array(1 / np.sqrt(2)))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(x, f"{p}.{s}", f"l{i}{s[-1]}{j}") for j, s in enumerate(LINEARS[:3]))
        qh = node("Transpose", [node("Reshape", [q, split], f"l{i}qr")], f"l{i}qh", perm=[0, 2, 1, 3])
        kh = node("Transpose", [node("Reshape", [k, split], f"l{i}kr")], f"l{i}kh", perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [v, split], f"l{i}vr")], f"l{i}vh", perm=[0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [qh, kh], f"l{i}qk"), scale], f"l{i}s")
        pr = node("Softmax", [s], f"l{i}p", axis=-1)
        c = node("Transpose", [node("MatMul", [pr, vh], f"l{i}cv")], f"l{i}ct", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, merge], f"l{i}c")
        a = linear(c, f"{p}.attention.output.dense", f"l{i}ao")
        x = ln(node("Add", [a, x], f"l{i}r1"), f"{p}.attention.output.LayerNorm", f"l{i}x1")
        f1 = linear(x, f"{p}.intermediate.dense", f"l{i}f1")
        erf = node("Erf", [node("Mul", [f1, rsqrt2], f"l{i}fs")], f"l{i}erf")
        g = node("Mul", [node("Mul", [f1, half], f"l{i}fh"), node("Add", [erf, one], f"l{i}e1")], f"l{i}g")
        f2 = linear(g, f"{p}.output.dense", f"l{i}f2")
        x = ln(node("Add", [f2, x], f"l{i}r2"), f"{p}.output.LayerNorm", f"l{i}x2")
    pooled = node("ReduceMean", [x], "pooled", axes=[1], keepdims=0)
    out = node("LpNormalization", [pooled], "embedding", axis=1, p=2) if normalize else \
        node("Identity", [pooled], "embedding")
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "S"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["B", H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def np_forward(cfg, t, normalize, ids):
    """The same encoder in numpy (float64), for the self-test."""
    from math import erf

    H, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    dh, eps = H // heads, cfg.get("layer_norm_eps", 1e-12)

    def ln(x, name):
        m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * t[name + ".weight"] + t[name + ".bias"]

    def lin(x, name):
        return x @ t[name + ".weight"].T.astype(np.float64) + t[name + ".bias"]

    B, S = ids.shape
    x = ln(t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:S]
           + t["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.{s}").reshape(B, S, heads, dh).transpose(0, 2, 1, 3) for s in LINEARS[:3])
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        c = ((s / s.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(B, S, H)
        x = ln(lin(c, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        f1 = lin(x, f"{p}.intermediate.dense")
        g = 0.5 * f1 * (1 + np.vectorize(erf)(f1 / np.sqrt(2)))
        x = ln(lin(g, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    e = x.mean(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True) if normalize else e


def self_test():
    rng = np.random.default_rng(3)
    cfg = dict(hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=16,
               vocab_size=50, max_position_embeddings=20, type_vocab_size=2, layer_norm_eps=1e-12)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.5  # noqa: E731
    t = {"embeddings.word_embeddings.weight": r(50, 8), "embeddings.position_embeddings.weight": r(20, 8),
         "embeddings.token_type_embeddings.weight": r(2, 8), "embeddings.LayerNorm.weight": 1 + r(8),
         "embeddings.LayerNorm.bias": r(8)}
    for i in range(2):
        for s, (o, n) in zip(LINEARS, [(8, 8)] * 4 + [(16, 8), (8, 16)]):
            t[f"encoder.layer.{i}.{s}.weight"], t[f"encoder.layer.{i}.{s}.bias"] = r(o, n), r(o)
        for s in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"encoder.layer.{i}.{s}.weight"], t[f"encoder.layer.{i}.{s}.bias"] = 1 + r(8), r(8)
    ids = rng.integers(0, 50, (3, 7))
    for normalize in (False, True):
        got = ort_session(build_onnx(cfg, t, normalize), 1).run(None, {"input_ids": ids})[0]
        want = np_forward(cfg, t, normalize, ids)
        d = float(np.abs(got - want).max())
        print(f"self-test normalize={normalize}: max abs difference {d:.2e}")
        if d > 1e-5:
            return 1
    return 0


def check(args, cfg, t, normalize, tok_json, blob, lopper):
    from tokenizers import Tokenizer

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    lines = [l for l in open(os.path.join(root, "data", "sentences", "eval.txt")).read().splitlines() if l][:8]
    tok = Tokenizer.from_str(tok_json)
    tok.no_padding()
    tok.no_truncation()
    sess = ort_session(blob, 1)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    out = json.loads(run_lopper([lopper, "embed", args.model, "--json", "--file", f.name]))
    os.unlink(f.name)
    worst = 0.0
    for line, rec in zip(lines, out["embeddings"]):
        ids = np.array([tok.encode(line).ids], np.int64)
        got = sess.run(None, {"input_ids": ids})[0][0]
        worst = max(worst, float(np.abs(got - np.array(rec["embedding"])).max()))
    print(f"check: {len(lines)} sentences, max abs difference ORT vs lopper embed {worst:.2e}")
    return worst <= 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--dense", help="model whose weights ORT runs (default: MODEL densified)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--samples", type=int, default=11)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write JSON lines here")
    ap.add_argument("--save-onnx", help="also write the ONNX model here")
    ap.add_argument("--lopper", default=None)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.model:
        raise Fail("give MODEL (an encoder .lop or a Hugging Face folder), or --self-test")
    lopper = args.lopper or default_lopper()
    cfg, t, normalize, tok = load_encoder(args.model)
    blob = build_onnx(cfg, t, normalize)
    if not args.skip_check and not check(args, cfg, t, normalize, tok, blob, lopper):
        return 1
    if args.save_onnx:
        # MODEL's own weights (zeros included), so a sparse engine can use them.
        open(args.save_onnx, "wb").write(blob)
    if args.dense:
        dcfg, dt, dnorm, _ = load_encoder(args.dense)
        blob = build_onnx(dcfg, dt, dnorm)
    cmd = [lopper, "bench", args.model, "--json", "--batch", args.batch, "--threads", args.threads,
           "--seq", str(args.seq)] + (["--quick"] if args.quick else [])
    recs = list(json_lines(run_lopper(cmd)))
    info = machine_info()
    rng = np.random.default_rng(0)
    out = []
    print(f"{'batch':>5} {'seq':>4} {'thr':>3} {'ORT dense ms':>13} {'lopper dense ms':>16} "
          f"{'lopper sparse ms':>17} {'ORT/sparse':>10}")
    for r in recs:
        ids = rng.integers(1000, cfg["vocab_size"], (r["batch"], r["seq"])).astype(np.int64)
        sess = ort_session(blob, r["threads"])
        ns = median_ns(lambda: sess.run(None, {"input_ids": ids}), 5 if args.quick else args.samples)
        rec = dict(r, ort_ns=ns, ort_over_sparse=ns / r["sparse_ns"], ort_model=args.dense or args.model, **info)
        out.append(rec)
        print(f"{r['batch']:>5} {r['seq']:>4} {r['threads']:>3} {ns / 1e6:>13.2f} {r['dense_ns'] / 1e6:>16.2f} "
              f"{r['sparse_ns'] / 1e6:>17.2f} {ns / r['sparse_ns']:>9.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"encoder_vs_ort: {e}", file=sys.stderr)
        sys.exit(2)
