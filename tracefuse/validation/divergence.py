"""The divergence finder: compare the output of every PyTorch module with the ONNX value it was exported to,
in execution order, and name the first module whose error exceeds the tolerance.

The ONNX side reads intermediate values by adding them as graph outputs of an in-memory copy of the graph
(tracefuse.graphs.intermediates); the PyTorch side captures module outputs with forward hooks
(tracefuse.runtimes.torch_capture). Memory stays bounded: modules are compared `chunk` at a time, each chunk
with its own ONNX Runtime session and its own reference forward call, and every array of a chunk is dropped
before the next chunk starts. The price is one forward call of each engine per chunk.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from tracefuse.graphs.intermediates import ModuleValue, module_values, with_outputs
from tracefuse.graphs.onnx_file import EXTERNAL_DATA_THRESHOLD, initializer_bytes
from tracefuse.runtimes.ort_values import run_values
from tracefuse.validation.metrics import compare

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 32
_METRICS = ("max_abs", "max_rel", "mean_abs", "cosine")


def display_name(path: str, root: str = "model") -> str:
    """A module path as the user's model spells it: the export wrapper's attribute (`root`) dropped."""
    if path == root:
        return "(model)"
    return path.removeprefix(f"{root}.")


def _pick(actual: np.ndarray, candidates: Sequence[np.ndarray]) -> np.ndarray | None:
    """The reference tensor the ONNX value stands for: the module's output with its shape (when several
    outputs share it, the closest one, so a module returning e.g. two hidden states is not misread)."""
    same = [c for c in candidates if c.shape == actual.shape]
    if len(same) <= 1:
        return same[0] if same else None
    a = actual.astype(np.float64)
    return min(same, key=lambda c: float(np.nanmax(np.abs(a - c.astype(np.float64)), initial=0.0)))


def _compare_one(mv: ModuleValue, actual: np.ndarray, candidates: list[np.ndarray] | None, atol: float,
                 rtol: float, root: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"module": display_name(mv.module, root), "path": mv.module, "call": mv.call,
                             "value": mv.value, "shape": list(actual.shape)}
    if candidates is None:
        return {**entry, "skipped": "the reference has no such module (or it was not called)"}
    expected = _pick(actual, candidates)
    if expected is None:
        shapes = ", ".join(str(list(c.shape)) for c in candidates) or "no tensors"
        return {**entry, "skipped": f"no output of the PyTorch module has the ONNX value's shape ({shapes})"}
    result = compare(mv.value, actual, expected, atol, rtol)
    entry.update({k: result[k] for k in _METRICS if k in result})
    entry["passed"] = bool(result["passed"])
    if "reason" in result:
        entry["reason"] = result["reason"]
    return entry


def _chunks(items: Sequence[ModuleValue], size: int) -> list[Sequence[ModuleValue]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def find_divergence(
    model: ir.Model,
    reference: Any,
    feeds: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    tolerance: Mapping[str, float],
    *,
    chunk: int = DEFAULT_CHUNK,
    threads: int | None = None,
    root: str = "model",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compare every module's output (ONNX intermediate vs PyTorch hook) on one input case; returns a report.

    `reference` is the torch module the graph was exported from (the export wrapper: its submodule paths are
    the ones recorded in the graph's metadata; `root` is the wrapper's attribute holding the user's model,
    dropped from the names shown). `input_names` orders `feeds` as the wrapper's positional arguments.
    The report lists the modules in execution order; `first_divergent` is the first whose error exceeds
    `|a - e| <= atol + rtol·|e|`, and `path` the error of it and of each module enclosing it. Never raises
    on a mismatch.
    """
    from tracefuse.runtimes.torch_capture import capture_outputs

    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    atol, rtol = float(tolerance.get("atol", 1e-4)), float(tolerance.get("rtol", 1e-3))
    values = module_values(model)
    large = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    args = [feeds[name] for name in input_names]
    entries: list[dict[str, Any]] = []
    groups = _chunks(values, chunk)
    for index, group in enumerate(groups):
        if progress:
            progress(f"comparing modules {index * chunk + 1}-{index * chunk + len(group)} of {len(values)}")
        names = list(dict.fromkeys(mv.value for mv in group))
        if large:  # past protobuf's 2 GiB: through a file with external data, one chunk at a time
            with tempfile.TemporaryDirectory(prefix="tracefuse-debug-") as tmp:
                onnx_values = run_values(with_outputs(model, names, Path(tmp) / "model.onnx"), feeds, names,
                                         threads=threads)
        else:
            onnx_values = run_values(with_outputs(model, names), feeds, names, threads=threads)
        wanted: dict[str, set[int]] = {}
        for mv in group:
            wanted.setdefault(mv.module, set()).add(mv.call)
        captured = capture_outputs(reference, wanted, args)
        for mv in group:
            entries.append(_compare_one(mv, onnx_values[mv.value], captured.get((mv.module, mv.call)), atol, rtol,
                                        root))
        del onnx_values, captured  # bounded memory: nothing of this chunk outlives it
    return summarize_divergence(entries, atol, rtol, chunks=len(groups))


def summarize_divergence(entries: list[dict[str, Any]], atol: float, rtol: float, *, chunks: int = 1,
                         ) -> dict[str, Any]:
    """The report of compared module entries (in execution order): first divergent module, its path, counts."""
    compared = [e for e in entries if "skipped" not in e]
    first = next((e for e in compared if not e["passed"]), None)
    path: list[dict[str, Any]] = []
    if first is not None:  # the divergent module, then each module enclosing it, as each one ends
        full = first["path"]
        after = compared[compared.index(first):]
        path = [{"module": e["module"], "call": e["call"], "max_abs": e.get("max_abs"), "cosine": e.get("cosine"),
                 "passed": e["passed"]}
                for e in after if e is first or full.startswith(e["path"] + ".")]
    return {
        "passed": first is None and bool(compared),
        "tolerance": {"atol": atol, "rtol": rtol},
        "first_divergent": first,
        "path": path,
        "compared": len(compared),
        "skipped": len(entries) - len(compared),
        "chunks": chunks,
        "modules": entries,
    }
