"""ONNX Runtime CPU runner."""

from __future__ import annotations

import logging

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.ort_compat import check_supported

logger = logging.getLogger(__name__)


class OrtCpuRunner(Runner):
    """Runs an ONNX artifact with ONNX Runtime's CPU execution provider."""

    name = "ort-cpu"
    providers = ("CPUExecutionProvider",)

    def __init__(self, artifact: Artifact, *, threads: int | None = None) -> None:
        if artifact.manifest.format != "onnx":
            raise ArtifactError(
                f"runtime {self.name} runs ONNX artifacts", found=f"a {artifact.manifest.format} artifact",
                fix="choose a runtime for that format",
            )
        super().__init__(artifact.manifest.inputs, artifact.manifest.outputs)
        self.artifact = artifact
        self.threads = threads
        self._session = None

    def _open(self) -> None:
        import onnxruntime as ort

        check_supported(self.artifact.graph_path)  # names both versions instead of ORT's bare refusal
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.artifact.graph_path), sess_options=options, providers=self._providers()
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ArtifactError(
                f"ONNX Runtime {ort.__version__} cannot load {self.artifact.graph_path}",
                found=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__,
                fix="re-export with an opset this ONNX Runtime supports (--opset), or upgrade onnxruntime",
            ) from exc

    def _providers(self) -> list:
        """The providers (names, or (name, options) pairs) the session is created with; GPU runners override."""
        return list(self.providers)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        values = self._session.run(names, feeds)
        return dict(zip(names, values))

    def _close(self) -> None:
        self._session = None
