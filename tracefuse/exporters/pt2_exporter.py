"""The pt2 exporter: `torch.export` of the flat wrapper saved as an ExportedProgram (`model.pt2`), or with
option `aot`, compiled by AOTInductor into a package (`model.aoti.pt2`) of native code.

Every named axis of the ArchSpec becomes one `torch.export.Dim` of the same name; an axis shared by
several inputs (batch, sequence) is the same Dim object, so torch.export knows they are equal. When
torch.export finds that the model only works within a range (for example sequence <= 512 for learned
position embeddings) it suggests narrower Dims; those suggestions are applied once and the export retried.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ExportError
from tracefuse.exporters import GraphExport

logger = logging.getLogger(__name__)

PROGRAM_NAME = "model.pt2"
AOT_NAME = "model.aoti.pt2"
_FIX = re.compile(r"^\s*(\w+) = Dim\('(\w+)'(?:, min=(\d+))?(?:, max=(\d+))?\)", re.M)
_SPECIALIZED = re.compile(r"^\s*(\w+) = (\d+)\s*$", re.M)


def make_dims(inputs: Sequence[TensorSpec], bounds: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """One torch.export.Dim per named axis (with optional min/max bounds), keyed by axis name."""
    bounds = bounds or {}
    names = dict.fromkeys(d for s in inputs for d in s.shape if isinstance(d, str))
    return {name: torch.export.Dim(name, **bounds.get(name, {})) for name in names}


def dynamic_shapes(inputs: Sequence[TensorSpec], dims: dict[str, Any]) -> tuple[Any, ...] | None:
    """The `dynamic_shapes` argument for a wrapper taking `*args`: per input, axis index -> Dim."""
    per_input = tuple({i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)} or None for s in inputs)
    return (per_input,) if any(per_input) else None


def suggested_bounds(message: str) -> dict[str, dict[str, int]]:
    """Parse torch.export's "Suggested fixes" (`sequence = Dim('sequence', max=512)`) into Dim bounds.

    Raises ExportError when torch.export says an axis must be a constant: that axis cannot be dynamic.
    """
    fixed = [(m.group(1), m.group(2)) for m in _SPECIALIZED.finditer(message.split("Suggested fixes:")[-1])]
    if fixed:
        raise ExportError(
            "torch.export specialized a dynamic axis to a constant",
            found=", ".join(f"{name} = {value}" for name, value in fixed),
            fix="the model's code depends on that size; export to --format onnx or torchscript, or fix the size",
        )
    bounds: dict[str, dict[str, int]] = {}
    for m in _FIX.finditer(message):
        bounds[m.group(1)] = {k: int(v) for k, v in (("min", m.group(3)), ("max", m.group(4))) if v}
    return bounds


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("torch.export warning %s: %s", w.category.__name__, str(w.message).splitlines()[0][:300])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:400]}" if text else type(exc).__name__


def export_program(wrapper, args: tuple, inputs: Sequence[TensorSpec]) -> tuple[Any, dict[str, Any]]:
    """torch.export the wrapper with one Dim per named axis; returns the program and how the axes were declared.

    Named Dims come first; with torch.export's suggested bounds applied when it gives some. When the
    named Dims still violate guards torch.export cannot express as bounds (CNNs: "height // 8 != 1"),
    the axes are declared `Dim.DYNAMIC` and torch.export infers their ranges (recorded in the manifest).
    """
    bounds: dict[str, dict[str, int]] = {}
    inferred = False
    for attempt in range(3):
        dims = ({name: torch.export.Dim.DYNAMIC for name in make_dims(inputs)} if inferred
                else make_dims(inputs, bounds))
        try:
            with torch.no_grad(), _quiet():
                program = torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes(inputs, dims),
                                              strict=False)
            return program, {"dims": "inferred" if inferred else "named", "dim_bounds": bounds}
        except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds
            message = str(exc)
            if attempt == 0 and "Suggested fixes" in message and suggested_bounds(message):
                bounds = suggested_bounds(message)
                logger.info("torch.export narrowed the dynamic axes: %s", bounds)
                continue
            if not inferred and "Constraints violated" in message:
                inferred = True
                logger.info("named Dims violate torch.export's guards; letting it infer the axis ranges")
                continue
            raise ExportError(
                "torch.export failed", found=_first_line(exc),
                fix="export to --format onnx or torchscript instead; run with --verbose for the full trace",
            ) from exc
    raise AssertionError("unreachable")


def _compile_aot(program, path: Path) -> None:
    from torch._inductor import aoti_compile_and_package

    try:
        with _quiet():
            aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:  # noqa: BLE001 - inductor and the C++ compiler fail in many ways
        raise ExportError(
            "AOTInductor compilation failed", found=_first_line(exc),
            fix="check that a C++ compiler (g++) works, or export without --aot",
        ) from exc


def export_pt2_graph(wrapper, example, inputs, outputs, dest: Path, options: dict) -> GraphExport:
    """The FORMATS entry for pt2: an ExportedProgram, or with option `aot` an AOTInductor package."""
    args = tuple(example[s.name] for s in inputs)
    wrapper.eval()
    program, declared = export_program(wrapper, args, inputs)
    ranges = {str(k): str(v) for k, v in program.range_constraints.items()}
    aot = bool(options.get("aot"))
    info: dict[str, Any] = {"exporter": "torch.export", "aot": aot, **declared, "range_constraints": ranges}
    if aot:
        _compile_aot(program, dest / AOT_NAME)
        return GraphExport([AOT_NAME], tuple(inputs), tuple(outputs), info)
    torch.export.save(program, str(dest / PROGRAM_NAME))
    info["nodes"] = sum(1 for n in program.graph.nodes if n.op == "call_function")
    return GraphExport([PROGRAM_NAME], tuple(inputs), tuple(outputs), info)
