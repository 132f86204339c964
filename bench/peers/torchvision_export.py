#!/usr/bin/env python3
"""Exports torchvision's ResNet-18 and MobileNetV2 to ONNX (opset 17, dynamic batch) with
torch.onnx.export, for checking lopper's import on full-size architectures written by another
tool, plus a batch of two inputs and ONNX Runtime's outputs for it. The weights are torchvision's
random initialisation (seed 0): the pretrained files come from download.pytorch.org, which these
machines cannot reach. That is enough for agreement and speed, not for accuracy.

    ~/.venvs/peers/bin/pip install torch torchvision onnx onnxruntime numpy
    ~/.venvs/peers/bin/python bench/peers/torchvision_export.py ~/.cache/lopper/tv
    lopper run ~/.cache/lopper/tv/resnet18.onnx --input ~/.cache/lopper/tv/resnet18.input.npy \\
        --output y.npy      # compare with resnet18.expected.npy
"""
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
import torchvision


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/lopper/tv")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, ctor in [("resnet18", torchvision.models.resnet18), ("mobilenet_v2", torchvision.models.mobilenet_v2)]:
        m = ctor(weights=None).eval()
        x = torch.randn(2, 3, 224, 224)
        p = os.path.join(out, f"{name}.onnx")
        torch.onnx.export(m, (x,), p, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
        s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        (y,) = s.run(None, {"input": x.numpy()})
        np.save(os.path.join(out, f"{name}.input.npy"), x.numpy())
        np.save(os.path.join(out, f"{name}.expected.npy"), y)
        print(f"{p}: {os.path.getsize(p)} bytes, output {y.shape}")


if __name__ == "__main__":
    main()
