"""The ONNX exporter: torch.onnx dynamo (default), the TorchScript-based exporter, or transformers' own.

Every backend receives explicit named dynamic shapes from the ArchSpec, and the written graph's inputs,
outputs and dynamic axes are renamed to the spec so that every artifact reads the same.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx_ir as ir
import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters import GraphExport
from tracefuse.exporters.wrapper import FlatWrapper
from tracefuse.graphs.onnx_file import apply_io_specs, save_onnx
from tracefuse.graphs.onnx_trust import graph_versions

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript", "transformers")
DEFAULT_OPSET = 18
GRAPH_NAME = "model.onnx"


def _dynamic_axes(specs: Sequence[TensorSpec]) -> dict[str, dict[int, str]]:
    return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in specs}


@contextlib.contextmanager
def _quiet():
    """Keep torch.onnx's chatter (warnings, printed reports) out of the user's terminal; it goes to debug."""
    buffer = io.StringIO()
    quiet = not logger.isEnabledFor(logging.DEBUG)
    noisy = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch")]
    levels = [lg.level for lg in noisy]
    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
        if quiet:
            warnings.simplefilter("ignore")
            for lg in noisy:
                lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(noisy, levels):
                lg.setLevel(level)
    if buffer.getvalue():
        logger.debug("exporter output:\n%s", buffer.getvalue())


def _transformers_translations() -> dict:
    """transformers' own ONNX lowerings for ops torch.onnx has none for (MoE `grouped_mm`, …); {} without them."""
    try:
        from transformers.exporters.exporter_onnx import _ONNX_TRANSLATION_TABLE
    except ImportError:
        return {}
    return dict(_ONNX_TRANSLATION_TABLE)


def _export_dynamo(wrapper, args, inputs, outputs, opset) -> ir.Model:
    axes = _dynamic_axes(inputs)
    dynamic = (tuple(axes[s.name] or None for s in inputs),) if any(axes.values()) else None

    def export(table: dict | None):
        return torch.onnx.export(
            wrapper, args, dynamo=True, input_names=[s.name for s in inputs], output_names=[s.name for s in outputs],
            dynamic_shapes=dynamic, opset_version=opset, optimize=True, verbose=False, custom_translation_table=table,
        ).model

    try:
        return export(None)
    except Exception as exc:  # noqa: BLE001 - only an op with no ONNX function is retried
        table = _transformers_translations()
        if "No ONNX function found" not in "".join(str(e) for e in (exc, exc.__cause__)) or not table:
            raise
        logger.info("an op has no ONNX function in torch.onnx; retrying with transformers' translations")
        return export(table)


def _export_torchscript(wrapper, args, inputs, outputs, opset) -> ir.Model:
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper, args, buffer, dynamo=False, input_names=[s.name for s in inputs],
        output_names=[s.name for s in outputs], dynamic_axes={**_dynamic_axes(inputs), **_dynamic_axes(outputs)},
        opset_version=opset, do_constant_folding=True,
    )
    return ir.from_proto(__import__("onnx").load_from_string(buffer.getvalue()))


def _export_transformers(wrapper, args, inputs, outputs, opset) -> ir.Model:
    try:
        from transformers.exporters import OnnxConfig, OnnxExporter
    except ImportError as exc:
        raise ExportError("this transformers has no transformers.exporters", fix="use --exporter dynamo") from exc
    if not isinstance(wrapper, FlatWrapper):
        raise ExportError("the transformers exporter takes the model's own inputs, not a flat KV cache "
                          "(past_key_values.{i}.key/value)", found=type(wrapper).__name__, fix="use --exporter dynamo")
    model = wrapper.model
    sample = dict(zip(wrapper.input_names, args))
    shapes = {
        # Dim.DYNAMIC lets torch.export infer ranges (a named Dim without bounds violates models' max
        # length guards); the axes are renamed after the spec below.
        name: {i: torch.export.Dim.DYNAMIC for i in dims} or None
        for name, dims in _dynamic_axes(inputs).items()
    }
    config = OnnxConfig(dynamic_shapes=shapes, opset_version=opset)
    exported = OnnxExporter().export(model, sample, config=config)
    graph = exported.program.graph
    # transformers names every output of the model; keep the ones the spec lists, in its order.
    by_name = {v.name: v for v in graph.outputs}
    missing = [s.name for s in outputs if s.name not in by_name]
    if missing:
        raise ExportError("transformers' exporter did not produce outputs " + ", ".join(missing))
    graph.outputs.clear()
    graph.outputs.extend(by_name[s.name] for s in outputs)
    return exported.program


def export_onnx(
    wrapper: FlatWrapper,
    example: dict[str, torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    dest: Path,
    *,
    opset: int | None = None,
    exporter: str = "dynamo",
) -> list[str]:
    """Export `wrapper` to `dest/model.onnx`; returns the files written (graph first)."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}'", fix=f"use one of: {', '.join(EXPORTERS)}")
    opset = opset or DEFAULT_OPSET
    args = tuple(example[s.name] for s in inputs)
    backend = {"dynamo": _export_dynamo, "torchscript": _export_torchscript, "transformers": _export_transformers}
    try:
        with torch.no_grad(), _quiet():
            model = backend[exporter](wrapper, args, inputs, outputs, opset)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures come from deep inside torch
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
        raise ExportError(
            f"the {exporter} exporter failed",
            found=f"{type(exc).__name__}: {first}",
            fix="try --exporter " + ("torchscript" if exporter != "torchscript" else "dynamo")
            + "; run with --verbose for the full trace",
        ) from exc
    apply_io_specs(model, inputs, outputs)
    return save_onnx(model, dest / GRAPH_NAME)


def export_onnx_graph(wrapper, example, inputs, outputs, dest: Path, options: dict) -> GraphExport:
    """The FORMATS entry for ONNX: options `opset` and `exporter`."""
    exporter = options.get("exporter") or "dynamo"
    opset = options.get("opset") or DEFAULT_OPSET
    files = export_onnx(wrapper, example, inputs, outputs, dest, opset=opset, exporter=exporter)
    # the versions actually written (the exporter may raise the opset), for the compatibility check on load
    versions = graph_versions(dest / files[0])
    if versions.get("opset") not in (None, opset):
        logger.warning("opset %s was asked for, but the %s exporter wrote opset %s (it supports no lower one); "
                       "the manifest records %s", opset, exporter, versions["opset"], versions["opset"])
    return GraphExport(files, tuple(inputs), tuple(outputs), {"exporter": exporter, **versions})
