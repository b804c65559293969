"""The TFLite exporter: `litert_torch` conversion of the flat wrapper (no TensorFlow), saved as `model.tflite`.

litert-torch 0.10 fails to lower symbolic sizes for transformer graphs (dynamic batch/sequence), so the
model gets one fixed-shape signature per shape: the spec's validation shapes by default, or the sizes
given with option `shapes` ("1x128,4x128": one size per named axis, in the order the inputs name them).
The runner picks the signature whose sizes match the feeds, and validation runs at exactly those shapes.

`enable_x64` is off by default, deliberately: most on-device runtimes and delegates (XNNPACK, GPU, NPU)
have no int64 kernels, so int64 token ids become int32. The manifest records the converted dtypes, so
callers know to feed int32. Option `x64` keeps 64-bit inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError, MissingDependencyError, TracefuseError
from tracefuse.exporters import GraphExport

logger = logging.getLogger(__name__)

GRAPH_NAME = "model.tflite"
INSTALL = "pip install 'tracefuse[tflite]'"


def axis_names(inputs: Sequence[TensorSpec]) -> list[str]:
    """The named (dynamic) axes of the inputs, in order of first appearance."""
    return list(dict.fromkeys(d for s in inputs for d in s.shape if isinstance(d, str)))


def parse_shapes(text: str | Sequence[dict[str, int]], axes: Sequence[str]) -> tuple[dict[str, int], ...]:
    """Parse "1x128,4x128" into axis-size maps (one size per named axis), or pass maps through checked."""
    if not isinstance(text, str):
        shapes = tuple(dict(s) for s in text)
    else:
        shapes = []
        for item in filter(None, (p.strip() for p in text.split(","))):
            try:
                sizes = [int(v) for v in item.lower().split("x")]
            except ValueError:
                sizes = []
            if len(sizes) != len(axes) or min(sizes, default=0) < 1:
                raise TracefuseError(
                    f"shape '{item}' does not give one positive size per dynamic axis",
                    found=f"{len(sizes)} sizes", fix=f"write sizes for {'x'.join(axes)}, e.g. "
                    + "x".join(["1"] * len(axes)) + ("," + "x".join(["4"] * len(axes)) if axes else ""),
                )
            shapes.append(dict(zip(axes, sizes, strict=True)))
        shapes = tuple(shapes)
    if not shapes or any(set(s) != set(axes) for s in shapes):
        raise TracefuseError("--shapes must give sizes for every dynamic axis", fix=f"axes: {', '.join(axes)}")
    return shapes


def signature_name(sizes: dict[str, int]) -> str:
    """The signature name for one fixed shape, e.g. "batch1_sequence16" ("serving_default" without axes)."""
    return "_".join(f"{axis}{size}" for axis, size in sizes.items()) or "serving_default"


def _litert_torch():
    try:
        import litert_torch
    except ImportError as exc:
        raise MissingDependencyError(
            "the tflite format needs litert-torch", found=f"{type(exc).__name__}: {exc}", fix=INSTALL
        ) from exc
    litert_torch.config.show_progress = False
    return litert_torch


@contextlib.contextmanager
def _quiet():
    buffer = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
        warnings.simplefilter("ignore")
        yield
    if buffer.getvalue():
        logger.debug("converter output:\n%s", buffer.getvalue())


def _ordered(details: dict[str, Any]) -> list[dict[str, Any]]:
    """Signature IO details in argument order (litert-torch names them args_0.. / output_0..)."""
    return [details[k] for k in sorted(details, key=lambda k: int(k.rsplit("_", 1)[-1]))]


def _resized(tensor: torch.Tensor, spec: TensorSpec, sizes: dict[str, int]) -> torch.Tensor:
    """A tensor of the spec's shape at `sizes`, filled by repeating the example's values (so ids stay valid)."""
    shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
    flat = tensor.reshape(-1)
    count = int(torch.Size(shape).numel())
    return flat[torch.arange(count) % flat.numel()].reshape(shape).clone()


def _io_specs(path: Path, names: list[str], inputs, outputs) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The manifest's IO specs with the dtypes the converted model really has."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(names[0])
    ins = _ordered(runner.get_input_details())
    outs = _ordered(runner.get_output_details())
    if len(ins) != len(inputs) or len(outs) != len(outputs):
        raise ExportError("the converted TFLite model has a different number of inputs or outputs",
                          found=f"{len(ins)} inputs, {len(outs)} outputs",
                          fix="report this model; export to onnx meanwhile")
    dtype = lambda d: np.dtype(d["dtype"]).name  # noqa: E731
    new_in = tuple(dataclasses.replace(s, dtype=dtype(d)) for s, d in zip(inputs, ins, strict=True))
    new_out = tuple(dataclasses.replace(s, dtype=dtype(d)) for s, d in zip(outputs, outs, strict=True))
    return new_in, new_out


def export_tflite_graph(wrapper, example, inputs, outputs, dest: Path, options: dict) -> GraphExport:
    """The FORMATS entry for TFLite: options `shapes` (fixed signatures) and `x64` (keep 64-bit inputs)."""
    litert_torch = _litert_torch()
    if any(s.name.startswith("past_key_values.") for s in inputs):
        raise ExportError(
            "the tflite format does not support graphs with a KV cache yet",
            found=f"{sum(s.name.startswith('past_key_values.') for s in inputs)} past_key_values inputs",
            fix="export it with --no-cache (one plain graph, no past key/values), or to --format onnx, pt2 "
                "or torchscript",
        )
    axes = axis_names(inputs)
    shapes = options.get("shapes") or options.get("validation_shapes")
    if not shapes:
        raise TracefuseError("the tflite exporter needs the shapes to convert at", fix="pass --shapes")
    shapes = parse_shapes(shapes, axes)
    enable_x64 = bool(options.get("x64"))
    wrapper.eval()
    converter = litert_torch.Converter()
    names = []
    for sizes in shapes:
        args = tuple(_resized(example[s.name], s, sizes) for s in inputs)
        names.append(signature_name(sizes))
        converter.add_signature(names[-1], wrapper, args)
    try:
        with torch.no_grad(), _quiet():
            edge = converter.convert(enable_x64=enable_x64)
    except Exception as exc:  # noqa: BLE001 - conversion fails deep inside torch.export / MLIR
        text = str(exc).strip()
        raise ExportError(
            "litert-torch could not convert the model",
            found=f"{type(exc).__name__}: {text.splitlines()[0][:400] if text else ''}",
            fix="export to --format onnx or pt2 instead; run with --verbose for the full trace",
        ) from exc
    path = dest / GRAPH_NAME
    edge.export(str(path))
    new_in, new_out = _io_specs(path, names, inputs, outputs)
    changed = {s.name: f"{old.dtype} -> {s.dtype}"
               for s, old in zip(new_in, inputs, strict=True) if s.dtype != old.dtype}
    info: dict[str, Any] = {
        "exporter": "litert-torch", "enable_x64": enable_x64, "dtype_changes": changed,
        "signatures": [{"name": n, "sizes": dict(s)} for n, s in zip(names, shapes, strict=True)],
        "validation_shapes": [dict(s) for s in shapes],
    }
    return GraphExport([GRAPH_NAME], new_in, new_out, info)
