"""Comparison metrics between a runtime's output and the reference's. Never raises on a mismatch."""

from __future__ import annotations

from typing import Any

import numpy as np

# Lower edges of the error histogram's bins: [0, 1e-9), [1e-9, 1e-8), ... [0.1, 1), [1, inf).
ERROR_HIST_EDGES: tuple[float, ...] = (0.0, *(10.0**k for k in range(-9, 1)))


def error_histogram(diff: np.ndarray) -> dict[str, list]:
    """Counts of absolute errors per decade bin (lower edges in `edges`; the last bin is open above)."""
    edges = np.asarray(ERROR_HIST_EDGES[1:])
    counts = np.bincount(np.searchsorted(edges, diff.ravel(), side="right"), minlength=len(ERROR_HIST_EDGES))
    return {"edges": list(ERROR_HIST_EDGES), "counts": [int(c) for c in counts]}


def compare(name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Metrics of one output and whether it is within `|a - e| <= atol + rtol * |e|` everywhere.

    Returns max_abs, max_rel, mean_abs, cosine, sqnr_db (signal-to-quantization-noise ratio,
    10·log10(Σe² / Σ(a-e)²); None when the outputs are identical), and top1 (argmax agreement over the
    last axis) for outputs whose name ends in "logits", and error_hist (the absolute errors counted per
    decade, see `error_histogram`).
    """
    result: dict[str, Any] = {
        "name": name, "shape": list(expected.shape), "dtype": str(expected.dtype),
        "actual_shape": list(actual.shape), "actual_dtype": str(actual.dtype),
    }
    if actual.shape != expected.shape:
        result.update(passed=False, reason=f"shape {list(actual.shape)} != reference {list(expected.shape)}")
        return result
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    finite = np.isfinite(e)
    # Non-finite values must sit where the reference has them and be the same: NaN, +inf or -inf.
    if not np.array_equal(np.isfinite(a), finite) or not np.array_equal(a[~finite], e[~finite], equal_nan=True):
        result.update(passed=False, reason="non-finite values differ from the reference")
        return result
    diff = np.abs(a[finite] - e[finite])
    ref = np.abs(e)[finite]
    result["max_abs"] = float(diff.max()) if diff.size else 0.0
    result["error_hist"] = error_histogram(diff)
    result["mean_abs"] = float(diff.mean()) if diff.size else 0.0
    result["max_rel"] = float((diff / np.maximum(ref, atol)).max()) if diff.size else 0.0
    na, ne = np.linalg.norm(a[finite]), np.linalg.norm(e[finite])
    result["cosine"] = float(np.dot(a[finite], e[finite]) / (na * ne)) if na > 0 and ne > 0 else float(na == ne)
    noise = float(np.sum(diff**2))
    result["sqnr_db"] = float(10 * np.log10(float(np.sum(e[finite] ** 2)) / noise)) if noise > 0 and ne > 0 else None
    if name.endswith("logits") and e.ndim >= 1 and e.shape[-1] > 1:
        result["top1"] = float(np.mean(np.argmax(a, axis=-1) == np.argmax(e, axis=-1)))
    over = diff > atol + rtol * ref
    result["passed"] = bool(not over.any())
    if over.any():
        result["reason"] = (
            f"{int(over.sum())} of {diff.size} values exceed atol {atol:g} + rtol {rtol:g}·|ref| "
            f"(max abs error {result['max_abs']:.3g})"
        )
    return result
