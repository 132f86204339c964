#!/usr/bin/env python3
"""ONNX Runtime's side of lopper's ONNX loop, run by scripts/test.sh after the Rust tests.

For every fixture in crates/lopper-model/tests/fixtures/onnx (exported by PyTorch):
  1. `lopper run FIXTURE.onnx` matches ONNX Runtime's outputs (stored with the fixture);
  2. `lopper export FIXTURE.onnx --to onnx` writes a file that passes onnx.checker (when the onnx
     package is present) and that ONNX Runtime runs to the same outputs;
  3. a model pruned by lopper (magnitude, 80 %), exported to ONNX, has exact zeros in its
     initializers, and ONNX Runtime's outputs on it match `lopper run` on the pruned .lop.
Tolerance: 1e-4, relative where values are large. Usage: LOPPER=path/to/lopper check-onnx.py
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "crates", "lopper-model", "tests", "fixtures", "onnx")
LOPPER = os.environ.get("LOPPER") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target")), "release", "lopper")


def lopper(*args):
    r = subprocess.run([LOPPER, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"lopper {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def ort_run(path, x):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    (y,) = s.run(None, {s.get_inputs()[0].name: x})
    return y, s.get_inputs()[0].name, s.get_outputs()[0].name


def close(a, b, what):
    tol = 1e-4 * np.maximum(np.abs(b), 1.0)
    bad = np.abs(a - b) > tol
    if a.shape != b.shape or bad.any():
        sys.exit(f"FAIL {what}: max |diff| {np.abs(a - b).max():.3e}")
    print(f"ok   {what}: max |diff| {np.abs(a - b).max():.2e}")


def main():
    try:
        import onnx
    except ImportError:
        onnx = None
    names = sorted(f[:-5] for f in os.listdir(FIX) if f.endswith(".onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = os.path.join(FIX, f"{name}.onnx")
            inp = os.path.join(FIX, f"{name}.input.npy")
            x = np.load(inp)
            want = np.load(os.path.join(FIX, f"{name}.expected.npy"))
            out = os.path.join(tmp, f"{name}.out.npy")
            lopper("run", model, "--input", inp, "--output", out)
            close(np.load(out), want, f"{name}: lopper run vs ONNX Runtime")

            back = os.path.join(tmp, f"{name}.rt.onnx")
            lopper("export", model, "--to", "onnx", "--out", back)
            if onnx is not None:
                onnx.checker.check_model(onnx.load(back), full_check=True)
            y, i, o = ort_run(back, x)
            assert (i, o) == ("input", "output"), (i, o)
            close(y, want, f"{name}: exported by lopper, run by ONNX Runtime")

            pruned = os.path.join(tmp, f"{name}.p80.lop")
            lopper("prune", model, "--method", "magnitude", "--sparsity", "0.8", "--out", pruned)
            pout = os.path.join(tmp, f"{name}.p80.out.npy")
            lopper("run", pruned, "--input", inp, "--output", pout)
            ponnx = os.path.join(tmp, f"{name}.p80.onnx")
            lopper("export", pruned, "--to", "onnx", "--out", ponnx)
            y, _, _ = ort_run(ponnx, x)
            close(y, np.load(pout), f"{name}: pruned 80 %, ONNX Runtime vs lopper run")
            if onnx is not None:
                zeros = sum(int((onnx.numpy_helper.to_array(t) == 0).sum()) for t in onnx.load(ponnx).graph.initializer)
                print(f"     {name}: {zeros} exact zeros in the exported initializers")
                assert zeros > 0


if __name__ == "__main__":
    main()
