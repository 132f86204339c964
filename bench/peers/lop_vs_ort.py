#!/usr/bin/env python3
"""End to end: a .lop model run by lopper (sparse and dense) against ONNX Runtime on the same
network made dense, checked for agreement first and timed side by side in one run.

The script reads the .lop with the plain `safetensors` library (no lopper code), rebuilds every
weight as a dense float32 matrix from its stored format (dense, CSR or BSR; f32 or int8 with
per-row scales), writes the equivalent dense ONNX graph (opset 17, dynamic batch), then:
  check: runs `lopper run MODEL --input RAW --json` on a seeded random batch and compares the
         graph output with ORT's (exit 1 when they disagree);
  bench: runs `lopper bench MODEL --batch .. --threads .. --json`, then times ORT on the same
         batches and thread counts (median of samples, each >= 20 ms) and prints both.

Layout: weights are [out, in], the ONNX/PyTorch order, and the .lop file stores that layout
(a convolution's [out, in, kh, kw] as the matrix [out, in*kh*kw]); activations are NCHW or
[N, F]. Times are nanoseconds per call on the whole batch.

Example (from the repository root):
  python3 bench/peers/lop_vs_ort.py lopper-demo/lenet300-gradual95.lop --batch 1,64 \\
      --threads 1,2 --json docs/perf/end-to-end-lenet300.json
`--self-test` checks the reader and the ONNX builder on synthetic files; it needs no lopper.
Needs: pip install numpy onnx onnxruntime safetensors
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

OPS = ("linear", "conv2d", "batchnorm", "relu", "maxpool", "avgpool", "global_avgpool", "add",
       "flatten", "softmax")
BENCH_KEYS = ("batch", "threads", "dense_ns", "sparse_ns", "speedup", "file_bytes", "dense_file_bytes")


class Fail(Exception):
    """A usage or environment error: reported on one line, exit code 2."""


# ---------------------------------------------------------------- reading the .lop

def dense_weight(get, name, spec):
    """The dense [rows, cols] float32 matrix of weight `name`, whatever its stored format."""
    rows, cols = spec["shape"]
    fmt, dtype = spec["format"], spec["dtype"]
    if fmt == "dense":
        return get(name).astype(np.float32).reshape(rows, cols)
    row_ptr = get(name + ".row_ptr").astype(np.int64)
    values = get(name + ".values")
    if fmt == "csr_delta8":
        # One-byte relative column indices: col = prev + 1 + delta, prev = -1 at each row start;
        # fillers are stored zeros, so they add nothing.
        delta = get(name + ".col_delta").astype(np.int64) + 1
        rows_of = np.repeat(np.arange(rows), np.diff(row_ptr))
        csum = np.cumsum(delta)
        starts = np.concatenate([[0], csum])[row_ptr[:-1]]
        col_idx = csum - np.repeat(starts, np.diff(row_ptr)) - 1
        w = np.zeros((rows, cols), np.float32)
        w[rows_of, col_idx] = values
        fmt = "decoded"
    else:
        col_idx = get(name + ".col_idx").astype(np.int64)
    if fmt == "decoded":
        pass
    elif fmt == "csr":
        w = np.zeros((rows, cols), np.float32)
        w[np.repeat(np.arange(rows), np.diff(row_ptr)), col_idx] = values
    elif fmt == "bsr":
        br, bc = spec["block"]
        nbr, nbc = -(-rows // br), -(-cols // bc)
        # Fill a padded matrix seen as [block row, br, block col, bc], then crop: the edge blocks
        # reach past the matrix and their outside entries are zero padding.
        w4 = np.zeros((nbr, br, nbc, bc), np.float32)
        w4[np.repeat(np.arange(nbr), np.diff(row_ptr)), :, col_idx, :] = values.reshape(-1, br, bc)
        w = w4.reshape(nbr * br, nbc * bc)[:rows, :cols].copy()
    else:
        raise Fail(f"weight '{name}': unknown storage format '{fmt}'")
    if dtype == "i8":
        # Unstored entries are 0, so scaling whole rows after densifying equals q * scale[row].
        w *= get(name + ".scales").astype(np.float32)[:, None]
    return w


def load_lop(path):
    """(graph, {weight name: dense [out, in]}, {vector name: float32 array})."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise Fail(f"model file not found: {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "lopper" or meta.get("format_version") != "1":
                raise Fail(f"{path}: not a version-1 .lop file (format={meta.get('format')!r}, "
                           f"format_version={meta.get('format_version')!r})")
            graph = json.loads(meta["graph"])
            names = set(f.keys())

            def get(n):
                if n not in names:
                    raise Fail(f"{path}: tensor '{n}' is missing")
                return f.get_tensor(n)

            for node in graph["nodes"]:
                if node.get("op") not in OPS:
                    raise Fail(f"{path}: node '{node.get('name')}' has unknown op '{node.get('op')}' "
                               f"(supported: {', '.join(OPS)})")
            weights = {n: dense_weight(get, n, s) for n, s in graph["weights"].items()}
            # Vectors (biases, BatchNorm parameters) are the tensors the nodes name directly.
            vectors = {nd[k]: get(nd[k]).astype(np.float32) for nd in graph["nodes"]
                       for k in ("bias", "gamma", "beta", "mean", "var") if nd.get(k)}
    except Fail:
        raise
    except Exception as e:  # safetensors errors, bad JSON, missing graph fields
        raise Fail(f"{path}: cannot read as a .lop file: {type(e).__name__}: {e}") from e
    return graph, weights, vectors


# ---------------------------------------------------------------- the dense ONNX model

def build_onnx(graph, weights, vectors):
    """The dense ONNX ModelProto of the graph: input `graph.input.name` [N, *shape], N dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], {}
    rank = {graph["input"]["name"]: 1 + len(graph["input"]["shape"])}  # ONNX wants the output's rank

    def init(name, arr):
        inits[name] = numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name)
        return name

    for nd in graph["nodes"]:
        op, ins, out, name = nd["op"], nd["inputs"], nd["output"], nd["name"]
        kernel = nd.get("kernel")
        rank[out] = 2 if op in ("linear", "global_avgpool", "flatten", "softmax") else rank[ins[0]]
        # Pool strides default to the kernel and conv strides to 1, as lopper reads the graph.
        stride = nd.get("stride") or (kernel if op in ("maxpool", "avgpool") else [1, 1])
        if op == "linear":
            extra = [init(nd["bias"], vectors[nd["bias"]])] if nd.get("bias") else []
            nodes.append(helper.make_node("Gemm", ins + [init(nd["weight"], weights[nd["weight"]])] + extra,
                                          [out], name=name, transB=1))
        elif op == "conv2d":
            w = weights[nd["weight"]]
            kh, kw = kernel
            extra = [init(nd["bias"], vectors[nd["bias"]])] if nd.get("bias") else []
            ph, pw = nd.get("padding") or [0, 0]
            nodes.append(helper.make_node(
                "Conv", ins + [init(nd["weight"], w.reshape(w.shape[0], -1, kh, kw))] + extra, [out],
                name=name, kernel_shape=kernel, strides=stride, pads=[ph, pw, ph, pw]))
        elif op == "batchnorm":
            params = [init(nd[k], vectors[nd[k]]) for k in ("gamma", "beta", "mean", "var")]
            nodes.append(helper.make_node("BatchNormalization", ins + params, [out], name=name,
                                          epsilon=float(nd["eps"])))
        elif op in ("maxpool", "avgpool"):
            nodes.append(helper.make_node("MaxPool" if op == "maxpool" else "AveragePool", ins, [out],
                                          name=name, kernel_shape=kernel, strides=stride))
        elif op == "global_avgpool":
            # lopper's global_avgpool yields [C]; ONNX keeps [N, C, 1, 1], so flatten after it.
            nodes.append(helper.make_node("GlobalAveragePool", ins, [out + "__gap"], name=name))
            nodes.append(helper.make_node("Flatten", [out + "__gap"], [out], name=name + "__flatten", axis=1))
        else:
            onnx_op, attrs = {"relu": ("Relu", {}), "add": ("Add", {}), "flatten": ("Flatten", {"axis": 1}),
                              "softmax": ("Softmax", {"axis": 1})}[op]
            nodes.append(helper.make_node(onnx_op, ins, [out], name=name, **attrs))
    inp = graph["input"]
    g = helper.make_graph(
        nodes, graph.get("name", "lopper"),
        [helper.make_tensor_value_info(inp["name"], TensorProto.FLOAT, ["N"] + list(inp["shape"]))],
        [helper.make_tensor_value_info(graph["output"], TensorProto.FLOAT,
                                       ["N"] + [None] * (rank[graph["output"]] - 1))],
        list(inits.values()))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="lop_vs_ort")
    model.ir_version = 8  # the lowest IR that carries opset 17: loads in older runtimes too
    onnx.checker.check_model(model)
    return model


def ort_session(blob, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def ort_int8_blob(blob):
    """ONNX Runtime's own int8 model of the same weights: `quantize_dynamic` (int8 weights, u8
    activations quantized per call), what an ORT user picks for CPU speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
        with open(src, "wb") as f:
            f.write(blob)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        with open(dst, "rb") as f:
            return f.read()


def median_ns(fn, samples, min_sample_ns=20_000_000):
    for _ in range(3):
        fn()
    t0 = time.perf_counter_ns()
    fn()
    inner = max(1, -(-min_sample_ns // max(time.perf_counter_ns() - t0, 1)))
    out = []
    for _ in range(samples):
        t = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter_ns() - t) / inner)
    return sorted(out)[len(out) // 2]


def interleaved_ns(fns, samples, min_sample_ns=20_000_000):
    """Medians of several callables timed in alternating samples, so noise hits them alike."""
    inner = []
    for fn in fns:
        for _ in range(3):
            fn()
        t0 = time.perf_counter_ns()
        fn()
        inner.append(max(1, -(-min_sample_ns // max(time.perf_counter_ns() - t0, 1))))
    out = [[] for _ in fns]
    for _ in range(samples):
        for i, fn in enumerate(fns):
            t = time.perf_counter_ns()
            for _ in range(inner[i]):
                fn()
            out[i].append((time.perf_counter_ns() - t) / inner[i])
    return [sorted(o)[len(o) // 2] for o in out]


# ---------------------------------------------------------------- lopper

def default_lopper():
    ctd = os.environ.get("CARGO_TARGET_DIR")
    if ctd and os.path.isfile(os.path.join(ctd, "release", "lopper")):
        return os.path.join(ctd, "release", "lopper")
    here = "target/release/lopper"
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", here)
    return here if os.path.isfile(here) or not os.path.isfile(repo) else os.path.normpath(repo)


def run_lopper(cmd):
    print("running:", shlex.join(cmd), file=sys.stderr)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise Fail(f"cannot run {cmd[0]}: {e.strerror} (build it with `cargo build --release` or pass --lopper)")
    if p.returncode != 0:
        err = " / ".join(l.strip() for l in p.stderr.strip().splitlines()[-10:] if l.strip())
        raise Fail(f"`{shlex.join(cmd)}` failed (exit {p.returncode}): {err or '(no stderr)'}")
    return p.stdout


def json_lines(text):
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def check(args, graph, blob):
    """Compare ORT with `lopper run` on a seeded batch; returns the summary, exits 1 on mismatch."""
    x = np.random.default_rng(args.seed).standard_normal((args.n, *graph["input"]["shape"]), dtype=np.float32)
    got = ort_session(blob, 1).run(None, {graph["input"]["name"]: x})[0].reshape(args.n, -1)
    fd, raw = tempfile.mkstemp(suffix=".f32", prefix="lop_vs_ort-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(x.astype("<f4").tobytes())
        out = run_lopper([args.lopper, "run", args.model, "--input", raw, "--json"])
    finally:
        os.unlink(raw)
    rec = next((o for o in json_lines(out) if "outputs" in o), None)
    if rec is None:
        raise Fail("`lopper run --json` printed no JSON object with 'outputs'")
    ref = np.asarray(rec["outputs"], np.float32).reshape(len(rec["outputs"]), -1)
    if ref.shape != got.shape:
        print(f"check FAILED: lopper outputs {ref.shape}, ORT {got.shape}", file=sys.stderr)
        sys.exit(1)
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    same_argmax = bool((got.argmax(1) == ref.argmax(1)).all())
    ok = diff <= 1e-3 * (1 + scale) and same_argmax
    summary = dict(n=args.n, seed=args.seed, max_abs_diff=diff, rel_diff=diff / max(scale, 1e-30),
                   max_abs_ref=scale, argmax_agree=same_argmax, ok=ok)
    print(f"check: {args.n} examples, max |ORT - lopper| = {diff:.3g} (relative {summary['rel_diff']:.3g}), "
          f"argmax {'agrees' if same_argmax else 'DIFFERS'} -> {'ok' if ok else 'FAILED'}")
    if not ok:
        sys.exit(1)
    return summary


def bench(args, graph, blob, base_blob=None, int8_blob=None):
    batches, threads = args.batch, args.threads
    extra = ["--baseline", args.baseline] if args.baseline else []
    out = run_lopper([args.lopper, "bench", args.model, "--batch", ",".join(map(str, batches)),
                      "--threads", ",".join(map(str, threads)), "--json"] + extra)
    lop = {}
    for r in json_lines(out):
        if all(k in r for k in BENCH_KEYS) and ((r["batch"], r["threads"]) not in lop or r.get("regime") == "hot"):
            lop[(r["batch"], r["threads"])] = r
    if not lop:
        raise Fail("`lopper bench --json` printed no record with " + ", ".join(BENCH_KEYS))
    rng = np.random.default_rng(args.seed)
    name, shape = graph["input"]["name"], graph["input"]["shape"]
    rows = []
    for t in threads:
        sess = ort_session(blob, t)  # one live session per model: idle pools would steal cores
        base = ort_session(base_blob, t) if base_blob else None
        q8 = ort_session(int8_blob, t) if int8_blob else None
        for b in batches:
            feeds = {name: rng.standard_normal((b, *shape), dtype=np.float32)}
            print(f"timing ORT: batch {b}, {t} thread(s)", file=sys.stderr)
            fns = [lambda: sess.run(None, feeds)]
            fns += [lambda: base.run(None, feeds)] if base else []
            fns += [lambda: q8.run(None, feeds)] if q8 else []
            times = interleaved_ns(fns, args.samples)
            ort_t = times[0]
            base_t = times[1] if base else None
            int8_t = times[-1] if q8 else None
            r = lop.get((b, t), {})
            dense, sparse = r.get("dense_ns"), r.get("sparse_ns")
            rows.append(dict(batch=b, threads=t, ort_ns=ort_t, lopper_dense_ns=dense, lopper_sparse_ns=sparse,
                             lopper_speedup=r.get("speedup"),
                             ort_over_lopper_sparse=ort_t / sparse if sparse else None,
                             lopper_dense_over_ort=dense / ort_t if dense else None,
                             file_bytes=r.get("file_bytes", os.path.getsize(args.model)),
                             dense_file_bytes=r.get("dense_file_bytes"), onnx_bytes=len(blob), lopper_record=r))
            if q8:
                rows[-1].update(ort_int8_ns=int8_t, ort_int8_bytes=len(int8_blob),
                                ort_int8_over_lopper_sparse=int8_t / sparse if sparse else None)
            if base:
                rows[-1].update(ort_baseline_ns=base_t, ort_speedup_vs_baseline=base_t / ort_t,
                                lopper_baseline_ns=r.get("baseline_ns"),
                                lopper_speedup_vs_baseline=r.get("speedup_vs_baseline"))
        del sess, base, q8
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    print(f"{'batch':>5} {'thr':>3} {'ORT dense ns':>13} {'lop dense ns':>13} {'lop sparse ns':>13} "
          f"{'ORT/lop-sparse':>14} {'lop-dense/ORT':>13} {'.lop B':>10} {'dense .lop B':>12} {'ONNX B':>10}")
    for r in rows:
        print(f"{r['batch']:>5} {r['threads']:>3} {r['ort_ns']:>13.0f} {fmt(r['lopper_dense_ns'], '13.0f')} "
              f"{fmt(r['lopper_sparse_ns'], '13.0f')} {fmt(r['ort_over_lopper_sparse'], '13.2f')}x "
              f"{fmt(r['lopper_dense_over_ort'], '13.2f')} {r['file_bytes']:>10} "
              f"{fmt(r['dense_file_bytes'], '>12')} {r['onnx_bytes']:>10}")
    if int8_blob:
        print("ONNX Runtime int8 (quantize_dynamic of the same weights):")
        for r in rows:
            print(f"{r['batch']:>5} {r['threads']:>3}  ORT int8 {r['ort_int8_ns']:.0f} ns  "
                  f"ORT-int8/lop-sparse {fmt(r['ort_int8_over_lopper_sparse'], '.2f')}x")
    if base_blob:
        print(f"against the baseline {args.baseline} (each engine: baseline time / this model's time):")
        for r in rows:
            print(f"{r['batch']:>5} {r['threads']:>3}  ORT {r['ort_speedup_vs_baseline']:.2f}x "
                  f"({r['ort_baseline_ns']:.0f} -> {r['ort_ns']:.0f} ns)  lopper "
                  f"{fmt(r['lopper_speedup_vs_baseline'], '.2f')}x "
                  f"({fmt(r['lopper_baseline_ns'], '.0f')} -> {fmt(r['lopper_sparse_ns'], '.0f')} ns)")
    return rows


def machine_info():
    import onnxruntime as ort

    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    cpu = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown")
    return dict(cpu=cpu, cores=os.cpu_count(), onnxruntime=ort.__version__, numpy=np.__version__,
                date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                command=shlex.join([sys.executable] + sys.argv))


# ---------------------------------------------------------------- self-test (no lopper needed)

def np_forward(graph, weights, vectors, x):
    """Plain numpy forward pass, the reference the ONNX model must match."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    vals = {graph["input"]["name"]: x.astype(np.float64)}
    for nd in graph["nodes"]:
        op, v = nd["op"], [vals[i] for i in nd["inputs"]]
        x = v[0]
        k = nd.get("kernel")
        s = nd.get("stride") or (k if op in ("maxpool", "avgpool") else [1, 1])
        vec = lambda key: vectors[nd[key]].astype(np.float64)
        if op == "linear":
            y = x @ weights[nd["weight"]].T + (vec("bias") if nd.get("bias") else 0)
        elif op == "conv2d":
            ph, pw = nd.get("padding") or [0, 0]
            win = windows(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), k, axis=(2, 3))[:, :, ::s[0], ::s[1]]
            n, c, oh, ow = win.shape[:4]
            y = win.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, -1) @ weights[nd["weight"]].T
            y = y.transpose(0, 3, 1, 2) + (vec("bias")[:, None, None] if nd.get("bias") else 0)
        elif op == "batchnorm":
            c = lambda key: vec(key)[:, None, None]
            y = c("gamma") * (x - c("mean")) / np.sqrt(c("var") + nd["eps"]) + c("beta")
        elif op in ("maxpool", "avgpool"):
            win = windows(x, k, axis=(2, 3))[:, :, ::s[0], ::s[1]]
            y = win.max(axis=(4, 5)) if op == "maxpool" else win.mean(axis=(4, 5))
        elif op == "global_avgpool":
            y = x.mean(axis=(2, 3))
        elif op == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            y = {"relu": lambda: np.maximum(x, 0), "add": lambda: x + v[1],
                 "flatten": lambda: x.reshape(len(x), -1)}[op]()
        vals[nd["output"]] = y
    return vals[graph["output"]]


def encode(rng, name, shape, fmt, dtype, density, block=None):
    """Random sparse weight in the given storage: (tensors, graph spec, the exact dense matrix)."""
    rows, cols = shape
    br, bc = block or (1, 1)
    nbr, nbc = -(-rows // br), -(-cols // bc)
    keep = rng.random((nbr, nbc)) < density
    mask = np.kron(keep, np.ones((br, bc), bool))[:rows, :cols]
    w = np.where(mask, rng.standard_normal(shape), 0).astype(np.float32)
    spec = dict(format=fmt, dtype=dtype, shape=list(shape), **({"block": list(block)} if block else {}))
    if fmt == "dense":
        return {name: w}, spec, w
    t = {}
    if dtype == "i8":
        scales = (np.abs(w).max(axis=1) / 127).astype(np.float32)
        q = np.round(w / np.where(scales > 0, scales, 1)[:, None]).astype(np.int8)
        w = q.astype(np.float32) * scales[:, None]
        t[name + ".scales"] = scales
    stored = q if dtype == "i8" else w
    pad = np.zeros((nbr * br, nbc * bc), stored.dtype)
    pad[:rows, :cols] = stored
    blocks = pad.reshape(nbr, br, nbc, bc).transpose(0, 2, 1, 3)[keep]  # [blocks, br, bc], row-major
    t[name + ".row_ptr"] = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.uint32)
    t[name + ".col_idx"] = np.nonzero(keep)[1].astype(np.uint16 if fmt == "csr" else np.uint32)
    t[name + ".values"] = blocks.reshape(-1) if fmt == "csr" else blocks
    return t, spec, w


def self_test():
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    mlp = ([1, 5, 6], [("flatten", {}), ("linear", dict(w=("fc1", [20, 30], "csr", "f32", None))),
                       ("relu", {}), ("linear", dict(w=("fc2", [16, 20], "bsr", "i8", (1, 8)))),
                       ("linear", dict(w=("fc3", [10, 16], "dense", "f32", None))), ("softmax", {})])
    cnn = ([3, 12, 12], [("conv2d", dict(w=("conv1", [8, 27], "csr", "i8", None), kernel=[3, 3], padding=[1, 1])),
                         ("relu", {}), ("maxpool", dict(kernel=[2, 2])),
                         ("conv2d", dict(w=("conv2", [6, 72], "bsr", "f32", (4, 1)), kernel=[3, 3], stride=[2, 2],
                                         padding=[1, 1])),
                         ("batchnorm", {}), ("add", {}), ("relu", {}), ("avgpool", dict(kernel=[2, 2], stride=[1, 1])),
                         ("global_avgpool", {}), ("linear", dict(w=("fc", [10, 6], "dense", "f32", None)))])
    with tempfile.TemporaryDirectory(prefix="lop_vs_ort-") as tmp:
        for label, (shape, ops) in (("mlp", mlp), ("cnn", cnn)):
            tensors, specs, truth, nodes, prev = {}, {}, {}, [], "input"
            for i, (op, a) in enumerate(ops):
                nd = dict(name=f"n{i}", op=op, inputs=[prev], output=f"x{i}")
                if "w" in a:
                    wn, wshape, fmt, dt, block = a.pop("w")
                    t, specs[wn + ".weight"], truth[wn + ".weight"] = encode(
                        rng, wn + ".weight", wshape, fmt, dt, 0.4, block)
                    tensors.update(t, **{wn + ".bias": rng.standard_normal(wshape[0]).astype(np.float32)})
                    nd.update(weight=wn + ".weight", bias=wn + ".bias")
                if op == "batchnorm":
                    for key in ("gamma", "beta", "mean", "var"):
                        tensors[f"bn.{key}"] = (rng.random(6) + 0.5 if key == "var" else rng.standard_normal(6)).astype(np.float32)
                    nd.update(gamma="bn.gamma", beta="bn.beta", mean="bn.mean", var="bn.var", eps=1e-5)
                if op == "add":
                    nd["inputs"] = [prev, f"x{i - 2}"]  # residual around the batchnorm
                nd.update(a)
                nodes.append(nd)
                prev = nd["output"]
            graph = dict(name=label, input=dict(name="input", shape=shape), output=prev, weights=specs, nodes=nodes)
            path = os.path.join(tmp, label + ".lop")
            save_file(tensors, path, metadata={"format": "lopper", "format_version": "1", "graph": json.dumps(graph)})
            g, weights, vectors = load_lop(path)
            for n, w in truth.items():
                assert weights[n].shape == w.shape and np.array_equal(weights[n], w), f"{label}: {n} differs"
            blob = build_onnx(g, weights, vectors).SerializeToString()
            x = rng.standard_normal((3, *shape)).astype(np.float32)
            got = ort_session(blob, 1).run(None, {"input": x})[0]
            ref = np_forward(graph, truth, tensors, x)
            diff = float(np.abs(got - ref).max())
            assert got.shape == ref.shape and diff <= 1e-4 * (1 + np.abs(ref).max()), f"{label}: diff {diff}"
            print(f"self-test {label}: {len(nodes)} nodes, weights {sorted(specs)} rebuilt exactly, "
                  f"ORT vs numpy max |diff| {diff:.2e}, output {got.shape}: ok")


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.splitlines()[:2]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("model", nargs="?", help="the .lop file")
    ap.add_argument("--lopper", default=None, help="lopper binary (default $CARGO_TARGET_DIR/release/lopper "
                    "if it exists, else target/release/lopper)")
    ap.add_argument("--batch", default="1,64", help="batch sizes to time (default 1,64)")
    ap.add_argument("--threads", default="1,2", help="thread counts to time (default 1,2)")
    ap.add_argument("--n", type=int, default=8, help="examples in the correctness check (default 8)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the random inputs (default 42)")
    ap.add_argument("--samples", type=int, default=7, help="timing samples, each >= 20 ms (default 7)")
    ap.add_argument("--onnx-out", help="also save the dense ONNX model here")
    ap.add_argument("--baseline", help="a second .lop with the same input (e.g. the unpruned network of a "
                    "structurally pruned model): checked too, and timed interleaved in both engines")
    ap.add_argument("--ort-int8", action="store_true",
                    help="also time ONNX Runtime's quantize_dynamic int8 model of the same weights")
    ap.add_argument("--json", help="write machine info, the check and the timing records here")
    ap.add_argument("--skip-check", action="store_true", help="only time")
    ap.add_argument("--skip-bench", action="store_true", help="only check correctness")
    ap.add_argument("--self-test", action="store_true", help="test the reader and ONNX builder on synthetic files")
    args = ap.parse_args()
    try:
        if args.self_test:
            return self_test()
        if not args.model:
            raise Fail("give a .lop model file (or --self-test)")
        try:
            args.batch = [int(v) for v in args.batch.split(",")]
            args.threads = [int(v) for v in args.threads.split(",")]
        except ValueError:
            raise Fail("--batch and --threads take comma-separated integers")
        args.lopper = args.lopper or default_lopper()
        if not (args.skip_check and args.skip_bench) and not os.path.isfile(args.lopper):
            raise Fail(f"lopper binary not found: {args.lopper} (build it with `cargo build --release` or pass --lopper)")
        graph, weights, vectors = load_lop(args.model)
        try:
            blob = build_onnx(graph, weights, vectors).SerializeToString()
        except Exception as e:  # a node missing a field, a shape the ONNX checker refuses
            raise Fail(f"{args.model}: cannot build the ONNX model: {type(e).__name__}: {e}") from e
        if args.onnx_out:
            with open(args.onnx_out, "wb") as f:
                f.write(blob)
        base_blob = None
        if args.baseline:
            bgraph, bweights, bvectors = load_lop(args.baseline)
            if bgraph["input"]["shape"] != graph["input"]["shape"]:
                raise Fail(f"--baseline {args.baseline}: input shape {bgraph['input']['shape']} differs from "
                           f"{graph['input']['shape']}")
            base_blob = build_onnx(bgraph, bweights, bvectors).SerializeToString()
        result = dict(machine=machine_info(), model=args.model, baseline=args.baseline, lopper=args.lopper,
                      check=None, records=[])
        if not args.skip_check:
            result["check"] = check(args, graph, blob)
            if base_blob:
                result["baseline_check"] = check(argparse.Namespace(**{**vars(args), "model": args.baseline}),
                                                 bgraph, base_blob)
        if not args.skip_bench:
            int8_blob = ort_int8_blob(blob) if args.ort_int8 else None
            result["records"] = bench(args, graph, blob, base_blob, int8_blob)
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(args.json + ".tmp", args.json)
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
