#!/usr/bin/env python3
"""Makes the ONNX fixtures lopper's import tests run on: small models written by PyTorch's own
exporter (torch.onnx.export), not by lopper, with an input batch and ONNX Runtime's outputs: an MLP, a MobileNet-style block (depthwise,
residual, dilation) and a ResNet stem with a padded max-pool.

    python3 -m venv ~/.venvs/peers && ~/.venvs/peers/bin/pip install torch onnx onnxruntime numpy
    ~/.venvs/peers/bin/python scripts/make-onnx-fixtures.py

Writes crates/lopper-model/tests/fixtures/onnx/NAME.onnx, NAME.input.npy (a batch of 3) and
NAME.expected.npy (ONNX Runtime's output for that batch). torch is not needed to run the tests:
the files are committed (well under 2 MB). Seeds are fixed, so a rerun on the same torch version
writes the same weights.
"""
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "lopper-model", "tests", "fixtures", "onnx")
SEED = 20261202


def randomize_bn(m, g):
    """Non-trivial running statistics, so a BatchNorm that is mishandled changes the output."""
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


class Mlp(nn.Module):
    """Linear + BatchNorm1d + ReLU, Linear + Sigmoid, Linear + Tanh, Linear, Softmax."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 96)
        self.bn1 = nn.BatchNorm1d(96)
        self.fc2 = nn.Linear(96, 48)
        self.fc3 = nn.Linear(48, 32)
        self.fc4 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.fc1(x)))
        x = torch.sigmoid(self.fc2(x))
        x = torch.tanh(self.fc3(x))
        return torch.softmax(self.fc4(x), dim=-1)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, c, expand):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.block(x)


class Cnn(nn.Module):
    """MobileNet-style: stem conv + BN + ReLU6, two inverted residual blocks (depthwise convs,
    residual adds), a dilated conv with hard-swish, max-pool, global average pool, a
    view(x.size(0), -1) flatten (a Shape/Gather/Concat/Reshape chain in the graph), linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.b1 = InvertedResidual(16, 4)
        self.b2 = InvertedResidual(16, 4)
        self.dil = nn.Conv2d(16, 32, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.b2(self.b1(self.stem(x)))
        x = self.pool(nn.functional.hardswish(self.dil(x)))
        x = self.gap(x)
        return self.fc(x.view(x.size(0), -1))


class BasicBlock(nn.Module):
    """ResNet's basic block with a strided 1x1 projection shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.down(x))


class ResNetStem(nn.Module):
    """torchvision ResNet's stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool with
    padding 1), one basic block, global average pool, torch.flatten, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block = BasicBlock(16, 32, 2)
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def export(name, model, shape, g):
    model.eval()
    x = torch.randn(3, *shape, generator=g)
    path = os.path.join(OUT, f"{name}.onnx")
    kwargs = dict(input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17)
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
    except TypeError:
        torch.onnx.export(model, (x,), path, **kwargs)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.allclose(y, ref, atol=1e-5), f"{name}: ORT and torch disagree"
    np.save(os.path.join(OUT, f"{name}.input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, f"{name}.expected.npy"), y.astype(np.float32))
    print(f"{path}: {os.path.getsize(path)} bytes, output {y.shape}")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    mlp = Mlp()
    randomize_bn(mlp, g)
    export("mlp", mlp, (64,), g)
    cnn = Cnn()
    randomize_bn(cnn, g)
    export("mobilenet_block", cnn, (3, 32, 32), g)
    res = ResNetStem()
    randomize_bn(res, g)
    export("resnet_stem", res, (3, 40, 40), g)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
