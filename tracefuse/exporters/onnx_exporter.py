"""The ONNX exporter: torch.onnx dynamo (default), the TorchScript-based exporter, or transformers' own.

Every backend receives explicit named dynamic shapes from the ArchSpec, and the written graph's inputs,
outputs and dynamic axes are renamed to the spec so that every artifact reads the same.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx_ir as ir
import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError, SpecializedAxesError
from tracefuse.exporters import GraphExport, transformers_patches
from tracefuse.exporters.torchscript_symbolics import register_symbolics
from tracefuse.exporters.triangular_solve import solve_triangular_eager
from tracefuse.exporters.triangular_solve import translations as triangular_translations
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


_REGISTRIES: dict[tuple, object] = {}


@contextlib.contextmanager
def _reused_registry():
    """Build torch.onnx's table of ONNX functions once per process, not once per export.

    torch.onnx rebuilds that table (500 ops, each traced from onnxscript's source) on every dynamo export: about
    1 s, a tenth of a small model's export. While this context is open, each export gets a fresh registry whose
    op lists are copied from the one built first for its opset (the exporter adds custom translations to
    them). Where torch's private registry API differs from what this expects, nothing is reused."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        build = cls.__dict__["from_torchlib"].__func__
    except (ImportError, KeyError, AttributeError):
        yield
        return

    def from_torchlib(klass, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if klass is not cls:
            return build(klass, *args, **kwargs)
        if key not in _REGISTRIES:
            _REGISTRIES[key] = build(klass, *args, **kwargs)
        cached, fresh = _REGISTRIES[key], klass()
        fresh.__dict__.update(cached.__dict__)
        fresh.functions = {name: list(metas) for name, metas in cached.functions.items()}
        return fresh

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = classmethod(build)


def _missing_translations() -> dict:
    """The entries of transformers' translation table for ops torch.onnx has no function for at all (the
    `transformers.grouped_mm_fallback` op of MoE experts, `aten.mm.dtype`). They change no graph that exports
    without them, so every export gets them: an MoE model no longer fails a first export (25 s for a tiny one)
    before the retry with the whole table. The table's other entries replace torch.onnx's own functions and
    are used only in that retry."""
    table = _transformers_translations()
    if not table:
        return {}
    try:
        from torch.onnx._internal.exporter import _registration

        with _reused_registry():
            known = _registration.ONNXRegistry.from_torchlib().functions
    except Exception:  # noqa: BLE001 - torch's private registry changed: no extra translations
        return {}
    return {op: fn for op, fn in table.items()
            if isinstance(op, torch._ops.OpOverload) and op.name() not in known}


def all_true_translation(x):
    """ONNX lowering of `aten._is_all_true` (a runtime check's condition, e.g. Transformers' placeholder count
    check): whether every element is true, as a boolean scalar."""
    from onnxscript import BOOL, INT32
    from onnxscript.onnx_opset import opset18 as op

    return op.Cast(op.ReduceMin(op.Reshape(op.Cast(x, to=INT32.dtype), op.Constant(value_ints=[-1])), keepdims=0),
                   to=BOOL.dtype)


def _first_translations() -> dict:
    """The custom translations of every dynamo export: tracefuse's (`linalg_solve_triangular`,
    `_is_all_true`) and transformers' for ops torch.onnx has no function for."""
    return {**triangular_translations(), torch.ops.aten._is_all_true.default: all_true_translation,
            **_missing_translations()}


def _export_dynamo(wrapper, args, inputs, outputs, opset) -> ir.Model:
    axes = _dynamic_axes(inputs)
    dynamic = (tuple(axes[s.name] or None for s in inputs),) if any(axes.values()) else None

    def export(table: dict):
        with _export_context():
            return torch.onnx.export(
                wrapper, args, dynamo=True, input_names=[s.name for s in inputs],
                output_names=[s.name for s in outputs], dynamic_shapes=dynamic, opset_version=opset, optimize=True,
                verbose=False, custom_translation_table=table,
            ).model

    try:
        return export(_first_translations())
    except Exception as exc:  # noqa: BLE001 - retried once with transformers' patches, else re-raised
        if not transformers_patches.available() or not _after_capture(exc):
            raise
        failure = exc
    logger.info("dynamo export failed (%s); retrying with transformers' export patches", _line(failure))
    try:
        return transformers_patches.export_with_patches(
            wrapper, args, dynamic, [s.name for s in inputs], [s.name for s in outputs], opset,
            {**triangular_translations(), **_transformers_translations()},
            context=_export_context)
    except Exception as retry:  # noqa: BLE001 - the first failure is the one to report
        logger.info("the export with transformers' patches failed too: %s", _line(retry))
    raise failure  # outside the except block: its own cause chain is kept


# torch.onnx's messages for a failure after torch.export captured the graph (decomposition, translation)
_AFTER_CAPTURE = ("This is step 2/3", "This is step 3/3", "No ONNX function found")


def _after_capture(exc: BaseException) -> bool:
    """Whether torch.export captured the model and a later step failed. In a probe of 21 types that failed a
    dynamo export, the retry with transformers' patches fixed two such (hunyuan_v1_moe, deepseek_v2) and none
    of the capture failures (data-dependent guards, range conflicts), so only these are retried."""
    text = "".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    return any(marker in text for marker in _AFTER_CAPTURE)


# torch.export's range conflict: "... inferred a static shape of 2 for dimension inputs['args'][2].shape[0]."
# (dynamo: the wrapper's positional inputs; transformers' exporter: the model's keyword inputs)
_STATIC_DIM = re.compile(r"inferred a static shape of (\d+) for dimension "
                         r"inputs\['(?:args'\]\[(\d+)|(\w+)')\]\.shape\[(\d+)\]")


def specialized_axes(exc: BaseException, inputs: Sequence[TensorSpec]) -> dict[str, int]:
    """The named axes torch.export kept static though the spec declared them dynamic, with the size each
    holds, from the message of `exc` or its causes ({} when it is another failure)."""
    by_name = {s.name: s for s in inputs}
    found: dict[str, int] = {}
    chain, seen = [exc], set()
    while chain:
        err = chain.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        for size, index, name, dim in _STATIC_DIM.findall(str(err)):
            spec = inputs[int(index)] if index and int(index) < len(inputs) else by_name.get(name)
            axis = spec.shape[int(dim)] if spec is not None and int(dim) < len(spec.shape) else None
            if isinstance(axis, str):
                found[axis] = int(size)
        chain += [err.__cause__, err.__context__]
    return found


def _line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:200]


@contextlib.contextmanager
def _export_context():
    """Around each dynamo export: torch.onnx's function registry built once per process, and gated-delta-rule
    models on their triangular-solve branch."""
    with _reused_registry(), solve_triangular_eager():
        yield


def _export_torchscript(wrapper, args, inputs, outputs, opset) -> ir.Model:
    register_symbolics(opset)  # aten::diff, aten::histc
    buffer = io.BytesIO()
    with _batched_experts(getattr(wrapper, "model", None)):
        torch.onnx.export(
            wrapper, args, buffer, dynamo=False, input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs], dynamic_axes={**_dynamic_axes(inputs), **_dynamic_axes(outputs)},
            opset_version=opset, do_constant_folding=True,
        )
    model = ir.from_proto(__import__("onnx").load_from_string(buffer.getvalue()))
    restore_unused_inputs(model, inputs)
    return model


def restore_unused_inputs(model: ir.Model, inputs: Sequence[TensorSpec]) -> None:
    """Put back, in the spec's order, the inputs the TorchScript exporter dropped because the traced graph never
    reads them (a masked-image model's `noise` in inference, a mask the model ignores), so every artifact takes
    the inputs its spec names; they stay unused. Inputs it kept under other names are left to the caller's check."""
    import numpy as np

    kept = {value.name: value for value in model.graph.inputs}
    if len(kept) >= len(inputs) or not set(kept) <= {spec.name for spec in inputs}:
        return
    restored = []
    for spec in inputs:
        value = kept.get(spec.name)
        if value is None:
            value = ir.Value(name=spec.name, type=ir.TensorType(ir.DataType.from_numpy(np.dtype(spec.dtype))),
                             shape=ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in spec.shape]))
            logger.info("input %s is not read by the traced graph: kept as an unused input", spec.name)
        restored.append(value)
    model.graph.inputs.clear()
    model.graph.inputs.extend(restored)


@contextlib.contextmanager
def _batched_experts(model):
    """Mixture-of-experts layers traced with Transformers' `batched_mm` experts (each token through its top-k
    experts as batched matmuls) instead of `grouped_mm`, which the TorchScript exporter cannot translate; the
    eager loop over experts is not used either, since a trace would keep only the experts its inputs chose.
    The two give the same numbers; the model's own setting is restored afterwards."""
    config = getattr(model, "config", None)
    current = getattr(config, "_experts_implementation", None)
    if current != "grouped_mm" or not hasattr(model, "set_experts_implementation"):
        yield
        return
    try:
        model.set_experts_implementation("batched_mm")
    except (ValueError, ImportError, AttributeError) as exc:  # a model that offers no batched experts
        logger.info("experts stay grouped_mm: %s", exc)
        yield
        return
    try:
        yield
    finally:
        model.set_experts_implementation(current)


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
        static = specialized_axes(exc, inputs)
        if static:
            held = ", ".join(f"'{a}' at {n}" for a, n in static.items())
            raise SpecializedAxesError(
                f"the {exporter} exporter failed: torch.export keeps {'axis' if len(static) == 1 else 'axes'} "
                f"{held} static (the model's code specializes {'it' if len(static) == 1 else 'them'})",
                axes=tuple(static), found=f"{type(exc).__name__}: {first}",
                fix=f"export with --fixed-axes {','.join(static)} (fixed at the trace size; the other axes stay "
                "dynamic), or try --exporter torchscript") from exc
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
