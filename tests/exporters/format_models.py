"""Small module:factory models for format tests whose compile time must stay short (AOTInductor)."""

from __future__ import annotations

import torch


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp():
    """A two-layer MLP on (batch, 8) features, batch dynamic."""
    torch.manual_seed(0)
    return _Mlp(), {"x": torch.randn(2, 8)}, {"x": {0: "batch"}}
