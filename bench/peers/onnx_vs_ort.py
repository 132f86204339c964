#!/usr/bin/env python3
"""An ONNX model in lopper against ONNX Runtime, in one run: ONNX Runtime times the dense ONNX
file, `lopper bench` times a lopper model of the same network (the .onnx itself, or a .lop made
from it by `lopper import` or `lopper prune`), sparse plan and densified twin. Checks agreement
first (`lopper run` vs ONNX Runtime on seeded inputs, dense model only), then prints one JSON
line per batch and thread count: ort_ns, lopper dense_ns and sparse_ns (median per call), and
ort_over_sparse = ort_ns / sparse_ns.

  python3 bench/peers/onnx_vs_ort.py DENSE.onnx [LOPPER_MODEL] --batch 1,8 --threads 1 \\
      --json docs/perf/onnx-mobilenet.json
Needs: pip install numpy onnxruntime
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort


def lopper_bin(arg):
    if arg:
        return arg
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "target"))
    return os.path.join(target, "release", "lopper")


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def median_ns(fn, samples, min_ns=20_000_000):
    fn()
    reps = 1
    while True:
        t = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        if time.perf_counter_ns() - t >= min_ns or reps > 1 << 20:
            break
        reps *= 2
    ts = []
    for _ in range(samples):
        t = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        ts.append((time.perf_counter_ns() - t) / reps)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx")
    ap.add_argument("model", nargs="?", help="lopper model (default: the .onnx itself)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--samples", type=int, default=11)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lopper")
    ap.add_argument("--json", help="also write the records here")
    args = ap.parse_args()
    exe = lopper_bin(args.lopper)
    model = args.model or args.onnx
    rng = np.random.default_rng(args.seed)
    s = session(args.onnx, 1)
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape][1:]
    # Agreement on the dense network (a pruned model is expected to differ).
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(xin, x)
        subprocess.run([exe, "run", args.onnx, "--input", xin, "--output", yout], check=True, capture_output=True)
        (want,) = s.run(None, {inp.name: x})
        diff = float(np.abs(np.load(yout) - want).max())
        if diff > 1e-4 * max(1.0, float(np.abs(want).max())):
            sys.exit(f"lopper and ONNX Runtime disagree on {args.onnx}: max |diff| {diff}")
    records = []
    for t in (int(v) for v in args.threads.split(",")):
        for b in (int(v) for v in args.batch.split(",")):
            out = subprocess.run([exe, "bench", model, "--batch", str(b), "--threads", str(t), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            lop = json.loads(out.strip().splitlines()[-1])
            sess = session(args.onnx, t)
            xb = rng.standard_normal((b, *shape)).astype(np.float32)
            ort_ns = median_ns(lambda: sess.run(None, {inp.name: xb}), args.samples)
            rec = {
                "onnx": args.onnx, "model": model, "batch": b, "threads": t,
                "ort_ns": ort_ns, "dense_ns": lop["dense_ns"], "sparse_ns": lop["sparse_ns"],
                "speedup": lop["speedup"], "ort_over_sparse": ort_ns / lop["sparse_ns"],
                "agreement_max_abs_diff": diff, "onnxruntime": ort.__version__,
                "cpu": lop.get("cpu", platform.processor()), "date": datetime.date.today().isoformat(),
            }
            print(json.dumps(rec))
            records.append(rec)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
