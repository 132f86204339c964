#!/usr/bin/env python3
"""Times DeepSparse 1.8 on an encoder ONNX file written by encoder_vs_ort.py --save-onnx (the
pruned weights, zeros included, so DeepSparse's sparse kernels can use them), on seeded random
ids of shape [batch, seq]: median of samples, in milliseconds, one JSON line per setting.

DeepSparse 1.8.0 needs its own environment (1.9 is an end-of-life stub):
  python3 -m venv DS && DS/bin/pip install deepsparse==1.8.0 "numpy<2" "onnx<1.15" "protobuf<4"
  NM_DISABLE_ANALYTICS=1 DS/bin/python bench/peers/deepsparse_encoder.py MODEL.onnx --batch 1 --threads 1
"""
import argparse
import json
import os
import time

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--samples", type=int, default=21)
    ap.add_argument("--vocab", type=int, default=30522)
    args = ap.parse_args()
    import deepsparse
    from deepsparse import compile_model

    rng = np.random.default_rng(0)
    for t in (int(v) for v in args.threads.split(",")):
        for b in (int(v) for v in args.batch.split(",")):
            engine = compile_model(args.onnx, batch_size=b, num_cores=t, input_shapes=[[b, args.seq]])
            ids = rng.integers(1000, args.vocab, (b, args.seq)).astype(np.int64)
            for _ in range(3):
                engine.run([ids])
            ts = []
            for _ in range(args.samples):
                s = time.perf_counter_ns()
                engine.run([ids])
                ts.append(time.perf_counter_ns() - s)
            ns = sorted(ts)[len(ts) // 2]
            print(json.dumps(dict(engine="deepsparse", version=deepsparse.__version__, onnx=args.onnx,
                                  batch=b, seq=args.seq, threads=t, median_ns=ns, min_ns=min(ts),
                                  samples=args.samples)))


if __name__ == "__main__":
    main()
