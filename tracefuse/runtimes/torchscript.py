"""TorchScript runner: `torch.jit.load` of a hash-verified `model.pt`, run on the CPU."""

from __future__ import annotations

import io
import logging

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.trusted import require_format, verified_bytes

logger = logging.getLogger(__name__)


class TorchScriptRunner(Runner):
    """Runs a TorchScript artifact with `torch.jit.load`; refuses a file whose sha256 does not match."""

    name = "torchscript"

    def __init__(self, artifact: Artifact, *, threads: int | None = None) -> None:
        require_format(artifact, self.name, "torchscript")
        super().__init__(artifact.manifest.inputs, artifact.manifest.outputs)
        self.artifact = artifact
        self.threads = threads
        self._module = None

    def _open(self) -> None:
        import torch

        data = verified_bytes(self.artifact, self.artifact.manifest.graph)
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            self._module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError subclasses of its own
            raise ArtifactError(
                f"torch {torch.__version__} cannot load {self.artifact.graph_path}",
                found=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__,
                fix="re-export the artifact with this torch",
            ) from exc

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        with torch.inference_mode():
            values = self._module(*args)
        if isinstance(values, torch.Tensor):
            values = (values,)
        return {spec.name: v.detach().cpu().numpy() for spec, v in zip(self.outputs, values, strict=True)}

    def _close(self) -> None:
        self._module = None
