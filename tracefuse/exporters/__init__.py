"""Exporters: model sources, ArchSpecs, and one exporter module per graph format.

Each format registers a function `(wrapper, example, inputs, outputs, dest, options) -> GraphExport`
in FORMATS (module path and function name, imported on use).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.artifact import TensorSpec
from tracefuse.errors import TracefuseError

FORMATS: dict[str, str] = {
    "onnx": "tracefuse.exporters.onnx_exporter:export_onnx_graph",
    "torchscript": "tracefuse.exporters.torchscript_exporter:export_torchscript_graph",
    "pt2": "tracefuse.exporters.pt2_exporter:export_pt2_graph",
    "tflite": "tracefuse.exporters.tflite_exporter:export_tflite_graph",
}


@dataclass(frozen=True)
class GraphExport:
    """What a format exporter wrote: its files (graph first), the final IO specs, and facts for the manifest."""

    files: list[str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    info: dict[str, Any] = field(default_factory=dict)


def export_graph(
    fmt: str,
    wrapper: Any,
    example: dict[str, Any],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    dest: Path,
    options: dict[str, Any],
) -> GraphExport:
    """Export `wrapper` to format `fmt` in `dest` with the format's options."""
    target = FORMATS.get(fmt)
    if target is None:
        raise TracefuseError(f"unknown format '{fmt}'", fix=f"use one of: {', '.join(FORMATS)}")
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)(wrapper, example, tuple(inputs), tuple(outputs),
                                                               dest, options)
