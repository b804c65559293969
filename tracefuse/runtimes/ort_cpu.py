"""ONNX Runtime CPU runner."""

from __future__ import annotations

import logging

import numpy as np

from tracefuse.artifact import Artifact, Manifest
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.ort_compat import check_supported

logger = logging.getLogger(__name__)


def ort_session_kwargs(manifest: Manifest) -> dict[str, list[str]]:
    """Keyword arguments for `onnxruntime.InferenceSession` that the artifact's manifest asks for: the load-time
    fusions a pass chose against (`runtime_hints.onnxruntime.disabled_optimizers`), e.g. the cpu preset's
    SkipLayerNormFusion and BiasGeluFusion. Empty when the manifest asks for nothing."""
    disabled = (manifest.runtime_hints.get("onnxruntime") or {}).get("disabled_optimizers") or []
    if not isinstance(disabled, list) or not all(isinstance(d, str) for d in disabled):
        raise ArtifactError("the manifest's runtime_hints.onnxruntime.disabled_optimizers is malformed",
                            found=repr(disabled)[:120], fix="a list of ONNX Runtime optimizer names; re-optimize")
    return {"disabled_optimizers": list(disabled)} if disabled else {}


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
                str(self.artifact.graph_path), sess_options=options, providers=self._providers(),
                **ort_session_kwargs(self.artifact.manifest),
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
