"""The PyTorch reference runner: the flat wrapper of the source model, run eagerly in fp32."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from tracefuse.artifact import TensorSpec
from tracefuse.runtimes.base import Runner

logger = logging.getLogger(__name__)


class TorchReferenceRunner(Runner):
    """Runs a module that takes the inputs positionally (in spec order) and returns a tuple of outputs."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        super().__init__(inputs, outputs)
        self.module = module

    def _open(self) -> None:
        self.module.eval()

    @torch.no_grad()
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        values = self.module(*args)
        if isinstance(values, torch.Tensor):
            values = (values,)
        return {spec.name: v.detach().cpu().numpy() for spec, v in zip(self.outputs, values)}
