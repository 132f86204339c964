#!/usr/bin/env python3
"""Is lopper's dense baseline a strong one? Compare its GFLOP/s with OpenBLAS (numpy) and
ONNX Runtime on the shapes, batches, threads and regimes of `lopper bench kernels`, in one run.

Usage: python3 bench/peers/dense_baseline.py [--lopper target/release/lopper] [--quick]
Needs: pip install numpy onnxruntime onnx threadpoolctl

Layout: W is [out, in] (ONNX/PyTorch order), X is [in, batch], Y = W @ X is [out, batch], the
same as lopper's kernels. Timing: each sample times enough calls to last >= 2 ms; the figure is
the median sample. `cold` rotates through weight copies totalling >= 64 MiB, as lopper does.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

SHAPES = [(3072, 768), (768, 3072), (300, 784), (100, 300)]
COLD_BYTES = 64 << 20


def median_ns(fn, copies, samples, min_sample_ns=2_000_000):
    for i in range(3):
        fn(i % copies)
    t0 = time.perf_counter_ns()
    fn(0)
    per = max(time.perf_counter_ns() - t0, 1)
    inner = max(copies, -(-min_sample_ns // per))
    out, call = [], 0
    for _ in range(samples):
        t = time.perf_counter_ns()
        for _ in range(inner):
            fn(call % copies)
            call += 1
        out.append((time.perf_counter_ns() - t) / inner)
    out.sort()
    return out[len(out) // 2]


def n_copies(nbytes, regime):
    return max(2, -(-COLD_BYTES // nbytes)) if regime == "cold" else 1


def numpy_ns(w, x, threads, regime, samples):
    from threadpoolctl import threadpool_limits

    ws = [w.copy() for _ in range(n_copies(w.nbytes, regime))]
    y = np.empty((w.shape[0], x.shape[1]), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        return median_ns(lambda i: np.matmul(ws[i], x, out=y), len(ws), samples)


def ort_ns(w, x, threads, regime, samples):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["W", "X"], ["Y"])],
        "dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [w.shape[0], x.shape[1]])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    blob = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if regime == "cold":
        # Several sessions (one per weight copy) each own a thread pool; spinning idle pools
        # would steal the cores from the one that runs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"]) for _ in range(n_copies(w.nbytes, regime))]
    feeds = {"X": x}
    return median_ns(lambda i: sessions[i].run(None, feeds), len(sessions), samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lopper", default="target/release/lopper")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json-out", help="write the comparison as JSON here")
    args = ap.parse_args()
    samples = 5 if args.quick else 11
    cmd = [args.lopper, "bench", "kernels", "--json", "--density", "0.1"] + (["--quick"] if args.quick else [])
    print("running:", " ".join(cmd), file=sys.stderr)
    records = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    dense = {}
    for r in records:
        dense[(r["rows"], r["cols"], r["batch"], r["threads"], r["regime"])] = (r["dense_ns"], r["dense_kernel"])
    rng = np.random.default_rng(42)
    rows_out = []
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}")
    header = f"{'shape':>10} {'batch':>5} {'thr':>3} {'reg':>4} {'lopper GF/s':>11} {'numpy GF/s':>10} {'ORT GF/s':>9} {'vs best':>7}  lopper kernel"
    print(header)
    for (rows, cols, batch, threads, regime), (lop_ns, kernel) in sorted(dense.items()):
        w = rng.uniform(-1, 1, size=(rows, cols)).astype(np.float32)
        x = rng.uniform(-1, 1, size=(cols, batch)).astype(np.float32)
        flops = 2.0 * rows * cols * batch
        np_ns = numpy_ns(w, x, threads, regime, samples)
        ort_t = ort_ns(w, x, threads, regime, samples)
        best = min(np_ns, ort_t)
        ratio = best / lop_ns
        rows_out.append(dict(rows=rows, cols=cols, batch=batch, threads=threads, regime=regime,
                             lopper_ns=lop_ns, numpy_ns=np_ns, ort_ns=ort_t, lopper_kernel=kernel,
                             lopper_vs_best_peer=ratio))
        print(f"{rows:>5}x{cols:<4} {batch:>5} {threads:>3} {regime:>4} {flops / lop_ns:>11.1f} {flops / np_ns:>10.1f} {flops / ort_t:>9.1f} {ratio:>6.2f}x  {kernel}")
    worst = min(r["lopper_vs_best_peer"] for r in rows_out)
    print(f"\nlopper dense GFLOP/s relative to the faster of numpy/ORT: worst case {worst:.2f} (goal >= 0.80)")
    if args.json_out:
        with open(args.json_out + ".tmp", "w") as f:
            json.dump(rows_out, f, indent=1)
        os.replace(args.json_out + ".tmp", args.json_out)


if __name__ == "__main__":
    main()
