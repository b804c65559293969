"""Quantization on ONNX Runtime's quantizer, with an accuracy guard.

Modes: `dynamic` (int8 weights, activations quantized at run time: MatMul / Gemm / fused Attention, whose
QKV projection is unpacked into a MatMul first: `attention_unpack.py`),
`static` (int8 QDQ with calibration: min-max, percentile or entropy, from generated inputs or a user
`.npz`), `int4` (weight-only `MatMulNBits`, block size option). The guard validates the quantized
model against the float one on the validation inputs and, while the worst cosine similarity (or, with
a top-1 target, the worst top-1 agreement of the logits outputs) misses the target, keeps the most
sensitive nodes in float. Sensitivity is measured, not guessed: each
candidate node is quantized alone and the cosine drop it causes on the first validation case is
recorded (one quantization per node: the guard's cost; the ranking uses the cosine drop even for a
top-1 target, since one node alone rarely flips an argmax); then the smallest set of most-sensitive
nodes that meets the target is found by bisection.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from tracefuse.passes import _ort
from tracefuse.passes.attention_unpack import attention_bias_nodes, unpack_attention
from tracefuse.passes.base import PassError

logger = logging.getLogger(__name__)

MODES = ("dynamic", "static", "int4")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
Cases = Sequence[tuple[str, Mapping[str, np.ndarray]]]


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize: mode, per-channel, calibration method and data, int4 block size."""

    mode: str = "dynamic"
    per_channel: bool = False
    calibration_method: str = "minmax"
    calibration: tuple[dict[str, np.ndarray], ...] = ()
    block_size: int = 32
    op_types: tuple[str, ...] = ()


@dataclass
class QuantizeResult:
    """The quantized model, its accuracy against the float model, and the nodes kept in float."""

    model: ir.Model
    stats: dict[str, Any] = field(default_factory=dict)


def check_options(options: QuantizeOptions) -> None:
    """Raise PassError for an unknown mode or calibration method, or static mode without calibration data."""
    if options.mode not in MODES:
        raise PassError(f"unknown quantization mode '{options.mode}'", fix=f"use one of: {', '.join(MODES)}")
    if options.calibration_method not in CALIBRATION_METHODS:
        raise PassError(f"unknown calibration method '{options.calibration_method}'",
                        fix=f"use one of: {', '.join(CALIBRATION_METHODS)}")
    if options.mode == "static" and not options.calibration:
        raise PassError("static quantization needs calibration inputs", fix="give --calibration FILE.npz, or "
                        "let tracefuse generate them from the artifact's input specs")
    if options.block_size < 16 or options.block_size & (options.block_size - 1):
        raise PassError("the int4 block size must be a power of two, at least 16", found=str(options.block_size))


def quantizable_nodes(model: ir.Model, options: QuantizeOptions) -> list[str]:
    """Names of the nodes the mode would quantize: MatMul / Gemm with a constant weight (and Attention for int8)."""
    defaults = {"int4": ("MatMul",), "static": ("MatMul", "Gemm"), "dynamic": ("MatMul", "Gemm", "Attention")}
    ops = options.op_types or defaults[options.mode]
    kept = set(attention_bias_nodes(model))
    names = []
    for node in model.graph:
        if node.op_type not in ops:
            continue
        if node.op_type == "Attention" and ("qkv_hidden_sizes" in node.attributes or node.name in kept):
            continue  # ONNX Runtime's quantizer leaves these in float (attention_unpack.py says why)
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if weight is not None and (weight.const_value is not None or weight.is_initializer()):
            names.append(node.name)
    return names


def quantize_once(model: ir.Model, options: QuantizeOptions, *, exclude: Sequence[str] = (),
                  include: Sequence[str] | None = None) -> ir.Model:
    """Quantize a copy of `model` (it is not modified), keeping `exclude` in float, or quantizing only `include`."""
    import onnx

    exclude = [*exclude, *attention_bias_nodes(model)]  # QAttention would drop their attention bias
    proto = ir.serde.serialize_model(model)
    with _quiet_quantizer(), tempfile.TemporaryDirectory(prefix="tracefuse-quant-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        if options.mode == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            all_nodes = [n.name for n in model.graph]
            skip = set(exclude) | (set(all_nodes) - set(include) if include is not None else set())
            quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=options.block_size, is_symmetric=True,
                                             nodes_to_exclude=sorted(skip))
            quantizer.process()
            return ir.serde.deserialize_model(quantizer.model.model)
        onnx.save(proto, str(src))
        # Static QDQ on every op (Gather, Add, Softmax, norms) wrecks transformer accuracy (cosine 0.25 on
        # all-MiniLM-L6-v2, measured); by default it quantizes the weight-bearing ops only.
        op_types = list(options.op_types) or (["MatMul", "Gemm"] if options.mode == "static" else None)
        common = {"per_channel": options.per_channel, "nodes_to_exclude": list(exclude),
                  "nodes_to_quantize": list(include) if include is not None else None,
                  "op_types_to_quantize": op_types}
        if options.mode == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, **common)
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

            method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                      "entropy": CalibrationMethod.Entropy}[options.calibration_method]
            quantize_static(src, dst, _reader(options.calibration), quant_format=QuantFormat.QDQ,
                            calibrate_method=method, **common)
        quantized = ir.load(str(dst))
        for value in quantized.graph.initializers.values():  # read the weights before the temp dir goes
            if isinstance(value.const_value, ir.ExternalTensor):
                value.const_value = ir.tensor(value.const_value.numpy())
        return quantized


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    # ORT's quantizer logs advice on the root logger at every call; tracefuse shapes the graph itself.
    advice = _DropAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _reader(feeds: Sequence[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return _Feeds()


def worst_cosine(expected: list[dict[str, np.ndarray]], actual: list[dict[str, np.ndarray]]) -> float:
    """The lowest cosine similarity over every float output of every case."""
    values = [_ort.cosine(act[name], exp[name])
              for exp, act in zip(expected, actual, strict=True) for name in exp
              if np.issubdtype(exp[name].dtype, np.floating)]
    return min(values) if values else 1.0


def logits_outputs(names: Sequence[str]) -> list[str]:
    """The outputs a top-1 criterion judges: those whose name ends in "logits" (as validation's metrics)."""
    return [n for n in names if n.endswith("logits")]


def worst_top1(expected: list[dict[str, np.ndarray]], actual: list[dict[str, np.ndarray]],
               names: Sequence[str]) -> float:
    """The lowest top-1 agreement (share of positions whose argmax over the last axis is the same) over the
    `names` outputs of every case."""
    values = [float(np.mean(np.argmax(act[n], axis=-1) == np.argmax(exp[n], axis=-1)))
              for exp, act in zip(expected, actual, strict=True) for n in names]
    return min(values) if values else 1.0


def quantize(
    model: ir.Model,
    options: QuantizeOptions,
    cases: Cases,
    *,
    target_cosine: float | None = None,
    target_top1: float | None = None,
    max_excluded: int | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize `model`; with `target_cosine` (worst cosine of every float output) or `target_top1` (worst
    top-1 agreement of the logits outputs), keep the most sensitive nodes in float until it is met.

    Stats: mode, the quantized / candidate node counts, the worst cosine (and top-1 agreement when the
    graph has logits outputs) of the result against the float model on `cases`, and, when the guard
    acted, the excluded nodes with the cosine each one alone cost.
    """
    check_options(options)
    if target_cosine is not None and target_top1 is not None:
        raise PassError("give one accuracy target, not both", found="--target-cosine and --target-top1",
                        fix="drop one of them")
    say = progress or (lambda _: None)
    unpacked = unpack_attention(model)  # fused attention's QKV projection: a MatMul the quantizer handles
    common_passes.NameFixPass()(model)  # the quantizer selects and excludes nodes by name
    candidates = quantizable_nodes(model, options)
    if not candidates:
        raise PassError(f"the graph has no node that {options.mode} quantization can quantize",
                        fix="quantize a graph with MatMul / Gemm layers over constant weights")
    expected = _ort.run_cases(_ort.session(model, threads=threads), cases)
    outputs = list(expected[0])
    logits = logits_outputs(outputs)
    if target_top1 is not None and not logits:
        raise PassError("a top-1 target needs a logits output", found=f"outputs {', '.join(outputs)}",
                        fix="use --target-cosine, or export a task whose output is logits")

    def evaluate(q: ir.Model, first_only: bool = False) -> dict[str, float]:
        chosen = cases[:1] if first_only else cases
        actual = _ort.run_cases(_ort.session(q, threads=threads), chosen, outputs)
        score = {"cosine": worst_cosine(expected[:len(chosen)], actual)}
        if logits:
            score["top1"] = worst_top1(expected[:len(chosen)], actual, logits)
        return score

    def meets(score: dict[str, float]) -> bool:
        if target_top1 is not None:
            return score["top1"] >= target_top1
        return target_cosine is None or score["cosine"] >= target_cosine

    say(f"quantizing ({options.mode})")
    quantized = quantize_once(model, options)
    score = evaluate(quantized)
    stats: dict[str, Any] = {"mode": options.mode, "per_channel": options.per_channel, "candidates": len(candidates),
                             "cosine_all_quantized": score["cosine"], "target_cosine": target_cosine, "excluded": [],
                             "attention_unpacked": unpacked}
    if logits:
        stats["top1_all_quantized"] = score["top1"]
        stats["target_top1"] = target_top1
    if options.mode == "static":
        stats["calibration"] = {"method": options.calibration_method, "samples": len(options.calibration)}
    if options.mode == "int4":
        stats["block_size"] = options.block_size
    if not meets(score):
        what = f"top-1 {score['top1']:.4f} misses {target_top1}" if target_top1 is not None else \
            f"cosine {score['cosine']:.5f} misses {target_cosine}"
        say(f"{what}: measuring the sensitivity of {len(candidates)} nodes")
        sensitivity = {}
        for i, name in enumerate(candidates):
            say(f"sensitivity {i + 1}/{len(candidates)}")
            # Ranking only needs an order: measured on the first case; the bisection uses them all.
            alone = evaluate(quantize_once(model, options, include=[name]), first_only=True)
            sensitivity[name] = 1.0 - alone["cosine"]
        ranked = sorted(candidates, key=lambda n: -sensitivity[n])
        limit = len(ranked) if max_excluded is None else min(max_excluded, len(ranked))
        quantized, score, k = _smallest_exclusion(model, options, ranked, limit, meets, evaluate, say,
                                                  quantized, score)
        stats["excluded"] = [{"node": n, "cosine_drop_alone": float(f"{sensitivity[n]:.3g}")} for n in ranked[:k]]
        stats["sensitivity_top"] = {n: float(f"{sensitivity[n]:.3g}") for n in ranked[:10]}
    final = _ort.run_cases(_ort.session(quantized, threads=threads), cases, outputs)
    stats["max_abs"] = max((float(np.abs(f[n].astype(np.float64) - e[n]).max()) for e, f in
                            zip(expected, final, strict=True) for n in e if e[n].size), default=0.0)
    stats["quantized_nodes"] = len(candidates) - len(stats["excluded"])
    stats["cosine"] = score["cosine"]
    if logits:
        stats["top1"] = score["top1"]
    stats["target_met"] = meets(score)
    return QuantizeResult(quantized, stats)


def _smallest_exclusion(model, options, ranked, limit, meets, evaluate, say, quantized, score):
    """Bisect the number k of most-sensitive nodes kept in float for the smallest k meeting the target."""
    cache: dict[int, tuple[ir.Model, dict[str, float]]] = {0: (quantized, score)}

    def at(k: int) -> tuple[ir.Model, dict[str, float]]:
        if k not in cache:
            say(f"keeping {k} node(s) in float")
            q = quantize_once(model, options, exclude=ranked[:k]) if k < len(ranked) else model
            cache[k] = (q, evaluate(q))
        return cache[k]

    if not meets(at(limit)[1]):
        logger.warning("keeping %d nodes in float still misses the target (%s)", limit, at(limit)[1])
        return (*at(limit), limit)
    lo, hi = 0, limit  # at(lo) misses, at(hi) meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(at(mid)[1]):
            hi = mid
        else:
            lo = mid
    return (*at(hi), hi)
