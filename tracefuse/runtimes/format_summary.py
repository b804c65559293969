"""Small per-format summaries for `inspect` on non-ONNX artifacts: file size and, where cheap, op counts.

Files whose loading executes code are read through the same hash check as the runners use.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from typing import Any

from tracefuse.artifact import Artifact
from tracefuse.runtimes.trusted import verified_bytes, verify_file

logger = logging.getLogger(__name__)

TOP_OPS = 25


def _histogram(kinds: list[str]) -> dict[str, int]:
    return dict(Counter(kinds).most_common(TOP_OPS))


def _torchscript(artifact: Artifact) -> dict[str, Any]:
    import torch

    module = torch.jit.load(io.BytesIO(verified_bytes(artifact, artifact.manifest.graph)), map_location="cpu")
    kinds = [n.kind() for n in module.inlined_graph.nodes()]
    params = sum(p.numel() for p in module.parameters())
    return {"nodes": len(kinds), "parameters": int(params), "ops": _histogram(kinds)}


def _pt2(artifact: Artifact) -> dict[str, Any]:
    if artifact.manifest.export.get("aot"):
        verify_file(artifact, artifact.manifest.graph)
        return {"compiled": "AOTInductor package (shared library; no graph to count)"}
    import torch

    program = torch.export.load(io.BytesIO(verified_bytes(artifact, artifact.manifest.graph)))
    kinds = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    params = sum(t.numel() for t in program.state_dict.values())
    return {"nodes": len(kinds), "parameters": int(params), "ops": _histogram(kinds)}


def _tflite(artifact: Artifact) -> dict[str, Any]:
    from tracefuse.runtimes.litert import interpreter_class

    interpreter = interpreter_class()(model_path=str(artifact.graph_path))
    kinds = [d["op_name"] for d in interpreter._get_ops_details()]  # noqa: SLF001 - the only op listing API
    return {"nodes": len(kinds), "ops": _histogram(kinds),
            "signatures": sorted(interpreter.get_signature_list())}


def format_summary(artifact: Artifact) -> dict[str, Any]:
    """A summary of a non-ONNX artifact's graph file: its size, and op counts where the format allows."""
    graph = artifact.graph_path
    summary: dict[str, Any] = {"format": artifact.manifest.format, "graph_file": artifact.manifest.graph,
                               "graph_bytes": graph.stat().st_size}
    readers = {"torchscript": _torchscript, "pt2": _pt2, "tflite": _tflite}
    reader = readers.get(artifact.manifest.format)
    if reader is None:
        return summary
    try:
        summary.update(reader(artifact))
    except ImportError as exc:
        summary["note"] = f"op counts need an optional package: {exc}"
    return summary
