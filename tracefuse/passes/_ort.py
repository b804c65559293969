"""Run an in-memory onnx-ir model on ONNX Runtime CPU (used by check mode and the quantization guard)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)


def model_bytes(model: ir.Model) -> bytes:
    """The serialized ModelProto of an onnx-ir model (weights inline; fine under 2 GB)."""
    return ir.serde.serialize_model(model).SerializeToString()


def session(model: ir.Model | bytes | str, *, threads: int | None = None, optimize: bool = False):
    """An ONNX Runtime CPU InferenceSession for a model, its bytes, or a path.

    ORT's own graph rewrites are limited to the basic level unless `optimize`, so a check measures
    the graph as tracefuse wrote it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    data = model_bytes(model) if isinstance(model, ir.Model) else model
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        raise TracefuseError(
            f"ONNX Runtime {ort.__version__} cannot load the rewritten graph",
            found=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__,
            fix="drop the pass that produced it (see --passes), or report the graph",
        ) from exc


def run_cases(sess: Any, cases: Sequence[tuple[str, Mapping[str, np.ndarray]]],
              output_names: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Run a session on every case; returns one {output name: array} dict per case."""
    names = list(output_names) if output_names else [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    results = []
    for _, feeds in cases:
        values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
        results.append(dict(zip(names, values, strict=True)))
    return results


def diff(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """max abs error, cosine and whether `|a - e| <= atol + rtol·|e|` holds everywhere."""
    if actual.shape != expected.shape:
        return {"passed": False, "reason": f"shape {list(actual.shape)} != {list(expected.shape)}"}
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    if not np.array_equal(np.isfinite(a), np.isfinite(e)):
        return {"passed": False, "reason": "non-finite values differ", "max_abs": float("inf")}
    finite = np.isfinite(e)
    a, e = a[finite], e[finite]
    err = np.abs(a - e)
    na, ne = np.linalg.norm(a), np.linalg.norm(e)
    cosine = float(np.dot(a, e) / (na * ne)) if na > 0 and ne > 0 else float(na == ne)
    over = err > atol + rtol * np.abs(e)
    out = {"passed": bool(not over.any()), "max_abs": float(err.max()) if err.size else 0.0, "cosine": cosine}
    if over.any():
        out["reason"] = f"{int(over.sum())} of {err.size} values exceed atol {atol:g} + rtol {rtol:g}·|ref|"
    return out


def cosine(actual: np.ndarray, expected: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two zero arrays)."""
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    na, ne = np.linalg.norm(a), np.linalg.norm(e)
    return float(np.dot(a, e) / (na * ne)) if na > 0 and ne > 0 else float(na == ne)
