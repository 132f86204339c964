#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora in fuzz/seeds/<target>/ from real files.

Seeds are small on purpose (libFuzzer mutates every byte of a seed): the committed ONNX fixtures,
.lop files lopper writes from them, a tiny Hugging Face encoder folder (hidden 8, 1 layer, 16-word
WordPiece vocabulary cut from all-MiniLM-L6-v2's tokenizer.json; the safetensors target's fixed
config matches it) and the .lop lopper imports from it, MiniLM's own config files and
safetensors header, the first ten Fashion-MNIST test images and labels (raw and gzip), the
committed recipes, a plan cache lopper writes, and .npy/.npz inputs.

    python3 fuzz/make_seeds.py LOPPER_BIN MINILM_DIR FASHION_MNIST_DIR

Standard library only (no numpy); deterministic apart from gzip's header time (set to 0).
"""
import gzip
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
ONNX_FIX = os.path.join(ROOT, "crates", "lopper-model", "tests", "fixtures", "onnx")

# The tiny encoder; fuzz_targets/safetensors.rs holds the same numbers.
TINY = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 16,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "a",
         "##s", ".", ",", "model", "short", "sentence"]


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors):
    """tensors: list of (name, shape, flat floats) -> safetensors bytes (F32)."""
    header, blobs, off = {}, [], 0
    for name, shape, vals in tensors:
        b = struct.pack(f"<{len(vals)}f", *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tiny_weights():
    r = random.Random(7)
    h, f, c = TINY["hidden_size"], TINY["intermediate_size"], TINY
    t = []

    def add(name, shape, ones=False, zeros=False):
        n = 1
        for s in shape:
            n *= s
        v = [1.0] * n if ones else [0.0] * n if zeros else [r.gauss(0, 0.2) for _ in range(n)]
        t.append((name, shape, v))

    add("embeddings.word_embeddings.weight", [c["vocab_size"], h])
    add("embeddings.position_embeddings.weight", [c["max_position_embeddings"], h])
    add("embeddings.token_type_embeddings.weight", [c["type_vocab_size"], h])
    add("embeddings.LayerNorm.weight", [h], ones=True)
    add("embeddings.LayerNorm.bias", [h], zeros=True)
    p = "encoder.layer.0"
    for lin, (o, i) in {
        "attention.self.query": (h, h), "attention.self.key": (h, h),
        "attention.self.value": (h, h), "attention.output.dense": (h, h),
        "intermediate.dense": (f, h), "output.dense": (h, f),
    }.items():
        add(f"{p}.{lin}.weight", [o, i])
        add(f"{p}.{lin}.bias", [o])
    for ln in ["attention.output.LayerNorm", "output.LayerNorm"]:
        add(f"{p}.{ln}.weight", [h], ones=True)
        add(f"{p}.{ln}.bias", [h], zeros=True)
    return safetensors(t)


def tiny_tokenizer(minilm):
    t = json.load(open(os.path.join(minilm, "tokenizer.json")))
    vocab = {w: i for i, w in enumerate(WORDS)}
    t["model"]["vocab"] = vocab
    for a in t["added_tokens"]:
        a["id"] = vocab[a["content"]]
    for k, v in t["post_processor"]["special_tokens"].items():
        v["ids"] = [vocab[k]]
    t["truncation"]["max_length"] = 16
    t["padding"] = None
    return json.dumps(t, indent=1)


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    lopper, minilm, fmnist = sys.argv[1:]
    shutil.rmtree(SEEDS, ignore_errors=True)
    tmp = tempfile.mkdtemp()
    try:
        # ONNX: the committed fixtures.
        for n in ["mlp", "mobilenet_block", "resnet_stem"]:
            put("onnx", f"{n}.onnx", open(os.path.join(ONNX_FIX, f"{n}.onnx"), "rb").read())
        # Graph .lop: imported, pruned (CSR, 4x1 blocks), int8.
        mlp = os.path.join(tmp, "mlp.lop")
        run(lopper, "import", os.path.join(ONNX_FIX, "mlp.onnx"), "--out", mlp)
        put("lop_graph", "mlp.lop", open(mlp, "rb").read())
        for tag, extra in [("csr90", []), ("bsr4x1", ["--pattern", "4x1"])]:
            out = os.path.join(tmp, f"mlp-{tag}.lop")
            run(lopper, "prune", mlp, "--method", "magnitude", "--sparsity", "0.9", *extra,
                "--out", out)
            put("lop_graph", f"mlp-{tag}.lop", open(out, "rb").read())
        i8 = os.path.join(tmp, "mlp-i8.lop")
        run(lopper, "export", os.path.join(tmp, "mlp-csr90.lop"), "--format", "csr",
            "--dtype", "i8", "--out", i8)
        put("lop_graph", "mlp-csr90-i8.lop", open(i8, "rb").read())
        # A plan cache lopper wrote for the MLP.
        run(lopper, "bench", mlp, "--batch", "1", "--threads", "1")
        put("plan_cache", "mlp-plan-cache.json", open(mlp + ".plan.json", "rb").read())
        # The tiny Hugging Face encoder folder (also a test fixture), and its .lop.
        hf = os.path.join(ROOT, "crates", "lopper-model", "tests", "fixtures", "tiny-bert")
        shutil.rmtree(hf, ignore_errors=True)
        os.makedirs(hf)
        st = tiny_weights()
        tok = tiny_tokenizer(minilm)
        open(os.path.join(hf, "config.json"), "w").write(json.dumps(TINY, indent=1))
        open(os.path.join(hf, "model.safetensors"), "wb").write(st)
        open(os.path.join(hf, "tokenizer.json"), "w").write(tok)
        for tag, sparsity in [("dense", "0"), ("magnitude50", "0.5")]:
            enc = os.path.join(tmp, f"tiny-bert-{tag}.lop")
            run(lopper, "prune", hf, "--method", "magnitude", "--sparsity", sparsity,
                "--out", enc)
            put("lop_encoder", f"tiny-bert-{tag}.lop", open(enc, "rb").read())
        put("safetensors", "tiny-bert.safetensors", st)
        put("tokenizer", "tiny-bert.json", tok)
        # MiniLM's real configs, and its safetensors header alone.
        put("hf_config", "tiny-bert.json", json.dumps(TINY, indent=1))
        put("hf_config", "minilm.json", open(os.path.join(minilm, "config.json")).read())
        put("hf_config", "minilm-pooling.json",
            open(os.path.join(minilm, "1_Pooling", "config.json")).read())
        raw = open(os.path.join(minilm, "model.safetensors"), "rb").read(1 << 16)
        (n,) = struct.unpack("<Q", raw[:8])
        put("safetensors", "minilm-header.safetensors", raw[: 8 + n])
        # IDX: ten Fashion-MNIST test images and labels, raw and gzip.
        for name, n_items, item in [("t10k-images-idx3-ubyte", 10, 784),
                                    ("t10k-labels-idx1-ubyte", 10, 1)]:
            with gzip.open(os.path.join(fmnist, name + ".gz")) as f:
                head = f.read(16 if item > 1 else 8)
                body = f.read(n_items * item)
            head = head[:4] + struct.pack(">I", n_items) + head[8:]
            put("idx", name + "-10", head + body)
            put("idx", name + "-10.gz", gzip.compress(head + body, mtime=0))
        # Recipes: every committed one.
        for d, _, files in os.walk(os.path.join(ROOT, "recipes")):
            for fn in files:
                if fn.endswith(".toml"):
                    rel = os.path.relpath(os.path.join(d, fn), os.path.join(ROOT, "recipes"))
                    put("recipe", rel.replace("/", "_"), open(os.path.join(d, fn)).read())
        # .npy and .npz: the MLP fixture's input, and arrays of the targets' shape [n, 4].
        put("npy", "mlp.input.npy", open(os.path.join(ONNX_FIX, "mlp.input.npy"), "rb").read())
        f32 = npy("<f4", (3, 4), struct.pack("<12f", *[i / 4 for i in range(12)]))
        f64 = npy("<f8", (4,), struct.pack("<4d", 1.0, -2.0, 0.5, 3.0))
        put("npy", "f32-3x4.npy", f32)
        put("npy", "f64-4.npy", f64)
        for name, members in [("input.npz", {"input": f32}),
                              ("two.npz", {"input": f32, "other": f64})]:
            path = os.path.join(tmp, name)
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
                for k, v in members.items():
                    z.writestr(zipfile.ZipInfo(k + ".npy", (1980, 1, 1, 0, 0, 0)), v)
            put("npz", name, open(path, "rb").read())
    finally:
        shutil.rmtree(tmp)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SEEDS) for f in fs)
    print(f"seeds in {SEEDS}: {total} bytes")


def npy(descr, shape, data):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, "(%s,)" % shape[0] if len(shape) == 1 else str(shape))
    h += " " * (-(len(h) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + data


if __name__ == "__main__":
    main()
