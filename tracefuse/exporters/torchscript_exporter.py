"""The TorchScript exporter: `torch.jit.trace` of the flat wrapper, saved as `model.pt`.

`torch.jit.trace` is deprecated in torch 2.13 (torch.export is its successor; see the pt2 format) and
transformers 5 no longer supports `torchscript=True`, so the model is traced through the ArchSpec's
FlatWrapper, which takes flat tensors and returns a flat tuple. The deprecation and tracer warnings
are captured and logged (not shown to the user) and their kinds recorded in the manifest.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from tracefuse.errors import ExportError
from tracefuse.exporters import GraphExport

logger = logging.getLogger(__name__)

GRAPH_NAME = "model.pt"


def _warning_kinds(caught: list[warnings.WarningMessage]) -> list[str]:
    kinds = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        logger.debug("torch.jit.trace warning %s: %s", w.category.__name__, text)
        kind = f"{w.category.__name__}: {text[:120]}"
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def export_torchscript_graph(wrapper, example, inputs, outputs, dest: Path, options: dict) -> GraphExport:
    """The FORMATS entry for TorchScript: trace the wrapper at the trace shape and save `model.pt`.

    Dynamic axes are not recorded by tracing: the trace is valid at other sizes only when the model
    has no size-dependent Python control flow, which validation at the spec's shapes checks.
    """
    args = tuple(example[s.name] for s in inputs)
    wrapper.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, args, strict=False, check_trace=False)
        except Exception as exc:  # noqa: BLE001 - tracing failures come from deep inside torch
            first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
            raise ExportError(
                "torch.jit.trace failed", found=f"{type(exc).__name__}: {first}",
                fix="export to --format pt2 (torch.export) or onnx instead; run with --verbose for the trace",
            ) from exc
    kinds = _warning_kinds(caught)
    if any("deprecated" in k for k in kinds):
        logger.info("torch.jit.trace is deprecated in torch %s; the pt2 format (torch.export) is its successor",
                    torch.__version__)
    path = dest / GRAPH_NAME
    traced.save(str(path))
    nodes = sum(1 for _ in traced.inlined_graph.nodes())
    info = {"exporter": "torch.jit.trace", "nodes": nodes, "trace_warnings": kinds}
    return GraphExport([GRAPH_NAME], tuple(inputs), tuple(outputs), info)
