"""The ONNX reference runner: `onnx.reference.ReferenceEvaluator`, a second, independent ONNX runtime.

It interprets the graph op by op in numpy, following the ONNX specification's reference implementations, so
it is slow (use it on small models) but shares no kernel with ONNX Runtime. Where ONNX Runtime and the
reference evaluator disagree on the same graph, the runtime is the suspect, not the export: a CI matrix that
runs both tells the two apart. It runs the standard domain only; graphs with com.microsoft contrib ops (the
`cpu` / `cuda` presets' fusions) are refused when opened, with the reason.
"""

from __future__ import annotations

import logging

from tracefuse.errors import ArtifactError
from tracefuse.runtimes.ort_cpu import OrtCpuRunner

logger = logging.getLogger(__name__)


class OnnxReferenceRunner(OrtCpuRunner):
    """Runs an ONNX artifact with onnx's numpy reference evaluator (standard ops only; single-threaded).

    It shares OrtCpuRunner's artifact checks and `run(names, feeds)` call (the evaluator has the same
    signature as an ONNX Runtime session); only the session it opens differs.
    """

    name = "onnx-reference"
    formats = ("onnx",)

    def _open(self) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(self.artifact.graph_path))  # external data is read from beside the graph
        custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
        if custom:
            raise ArtifactError(
                f"runtime {self.name} runs standard ONNX ops only",
                found=f"ops from domain(s) {', '.join(custom)} in {self.artifact.graph_path}",
                fix="run it on ort-cpu, or optimize with --preset standard for a graph of standard ops",
            )
        try:
            self._session = ReferenceEvaluator(model)
        except Exception as exc:  # noqa: BLE001 - the evaluator raises plain exceptions for unsupported ops
            raise ArtifactError(
                f"onnx {onnx.__version__}'s reference evaluator cannot load {self.artifact.graph_path}",
                found=(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300],
                fix="run it on ort-cpu, or upgrade onnx for newer ops",
            ) from exc
