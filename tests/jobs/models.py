"""Tiny `module:factory` models for the CI matrix tests: each exports in a second or two."""

from __future__ import annotations

import torch


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.act = torch.nn.GELU()
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(pixels))).mean(dim=(2, 3))


class _Norm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(self.proj(x))
        return h, torch.softmax(h, dim=-1)


def mlp():
    """A two-layer MLP on (batch, 8) features."""
    return _Mlp(), {"x": torch.randn(2, 8)}, {"x": {0: "batch"}}


def conv():
    """A conv + batch-norm + pooling block on (batch, 3, 8, 8) images."""
    return _Conv(), {"pixels": torch.randn(2, 3, 8, 8)}, {"pixels": {0: "batch"}}


def norm():
    """A projection + layer norm with two outputs on (batch, 8) features."""
    return _Norm(), {"x": torch.randn(2, 8)}, {"x": {0: "batch"}}


def broken():
    """A factory that raises: its cell must fail alone."""
    raise RuntimeError("this model is broken on purpose")


def slow():
    """A factory that hangs: its cell must be killed at its time limit."""
    import time

    time.sleep(600)
