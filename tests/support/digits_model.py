"""The demo's and the end-to-end test's model: a small MLP trained on scikit-learn's digits (seconds).

Saved with torch.export (a .pt2 the builder reads) into `<store>/models/`, with a dynamic batch axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

INPUT = "pixels"


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as float32 pixels in [0, 1] (N x 64) and their labels."""
    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    return x, torch.from_numpy(digits.target.astype(np.int64))


def train(epochs: int = 40) -> tuple[nn.Module, float]:
    """A 64-128-10 MLP (deterministic: seed 0); returns it in eval mode and its train accuracy."""
    x, y = dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return model, accuracy


def save(model: nn.Module, path: Path) -> Path:
    """torch.export the model (batch 1..1024) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x, _ = dataset()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path
