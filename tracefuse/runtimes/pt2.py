"""pt2 runner: a hash-verified ExportedProgram (`torch.export.load`) or AOTInductor package
(`torch._inductor.aoti_load_package`), run on the CPU.

AOTInductor loads a path, not a buffer: the verified bytes are copied into a private temporary file
and that copy is loaded, so the file checked is the file run.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.trusted import require_format, verified_bytes

logger = logging.getLogger(__name__)


class Pt2Runner(Runner):
    """Runs a pt2 artifact (ExportedProgram or AOTInductor package); refuses a file whose sha256 does not match."""

    name = "pt2"

    def __init__(self, artifact: Artifact, *, threads: int | None = None) -> None:
        require_format(artifact, self.name, "pt2")
        super().__init__(artifact.manifest.inputs, artifact.manifest.outputs)
        self.artifact = artifact
        self.threads = threads
        self.aot = bool(artifact.manifest.export.get("aot"))
        self._callable = None
        self._tmpdir: str | None = None

    def _open(self) -> None:
        import torch

        data = verified_bytes(self.artifact, self.artifact.manifest.graph)
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            if self.aot:
                from torch._inductor import aoti_load_package

                self._tmpdir = tempfile.mkdtemp(prefix="tracefuse-aoti-")
                private = Path(self._tmpdir) / "model.aoti.pt2"
                private.write_bytes(data)
                self._callable = aoti_load_package(str(private))
            else:
                self._callable = torch.export.load(io.BytesIO(data)).module()
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
            self._cleanup()
            raise ArtifactError(
                f"torch {torch.__version__} cannot load {self.artifact.graph_path}",
                found=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__,
                fix="re-export the artifact with this torch (AOT packages also need the same CPU features)",
            ) from exc

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        with torch.inference_mode():
            values = self._callable(*args)
        if isinstance(values, torch.Tensor):
            values = (values,)
        return {spec.name: v.detach().cpu().numpy() for spec, v in zip(self.outputs, values, strict=True)}

    def _cleanup(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _close(self) -> None:
        self._callable = None
        self._cleanup()
