"""Tiny real models used by the builder and serving tests (deterministic, seconds to build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    """Two-layer perceptron: 16 -> 32 -> 8."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Block(nn.Module):
    """Residual block: conv-bn-relu-conv-bn + skip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.b1 = nn.BatchNorm2d(ch)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.b2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class CNN(nn.Module):
    """Small CNN with BatchNorm and a residual block; input [N, 1, 8, 8], 10 classes."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, ch, 3, padding=1)
        self.bn = nn.BatchNorm2d(ch)
        self.block = Block(ch)
        self.fc = nn.Linear(ch, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block(x)
        return self.fc(x.mean(dim=(2, 3)))


class NaNModel(nn.Module):
    """Produces NaN for negative inputs (log of a negative number)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


def _randomize_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


def cnn() -> CNN:
    torch.manual_seed(0)
    model = CNN().eval()
    _randomize_bn(model)
    return model


def save_torchscript(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def save_exported(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},)
    )
    torch.export.save(program, str(path))
    return path


def save_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> Path:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    return path


def train_digits_cnn(
    seed: int = 0, epochs: int = 25
) -> tuple[CNN, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CNN trained on sklearn's 8x8 digits; returns model and (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.75)
    torch.manual_seed(seed)
    model = CNN(16).double()  # float64 training: the same weights on any CPU ISA / thread count
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[:split]).double(), torch.from_numpy(y[:split])
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.float().eval(), x[:split], y[:split], x[split:], y[split:]
