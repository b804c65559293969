"""A pipeline of named passes; in check mode ONNX Runtime runs after every pass and the first pass that
moves the outputs past the tolerance is named."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from tracefuse.graphs.onnx_file import op_histogram
from tracefuse.passes import _ort
from tracefuse.passes.base import Pass, PassCheckFailed, PassError, get_pass

logger = logging.getLogger(__name__)

Cases = Sequence[tuple[str, Mapping[str, np.ndarray]]]

# The passes each target runtime wants. `cpu` keeps the rewrites that measured faster on ONNX Runtime
# CPU (benchmarks/bench_cpu.py, benchmarks/bench_kernels.py, docs/passes.md): fused attention (BERT-base
# 0.75 × PyTorch eager against 0.81 without it), LayerNormalization and Gelu without their residual / bias
# Add folded in (ONNX Runtime's CPU SkipLayerNormalization and BiasGelu kernels measured slower than the
# ops they replace; the artifact asks ONNX Runtime not to re-fuse them at load).
PRESETS: dict[str, tuple[str, ...]] = {
    "cpu": ("cleanup", "fuse-norm-cpu", "fuse-gelu-cpu", "fuse-attention"),
    "cuda": ("cleanup", "fuse-norm", "fuse-gelu", "fuse-attention"),
    # TensorRT's parser: standard ops, the opset left as exported.
    "tensorrt": ("cleanup", "fuse-layer-norm"),
    # Standard ONNX only: opset-23 Attention / RMSNormalization (the graph is converted to opset 23 when needed).
    "standard": ("cleanup", "fuse-norm-standard", "fuse-attention-standard"),
}

# `--target standard` turns the ONNX Runtime fusions of a pass list into their standard-op variants.
STANDARD_VARIANTS = {"fuse-attention": "fuse-attention-standard", "fuse-norm": "fuse-norm-standard",
                     "fuse-norm-cpu": "fuse-norm-standard"}
TARGETS = ("ort", "standard")


def for_target(names: Sequence[str], target: str) -> list[str]:
    """The pass names for a target runtime: unchanged for `ort`; for `standard`, the standard-op variant of
    each fusion, and a PassError for a pass that only writes com.microsoft ops."""
    if target not in TARGETS:
        raise PassError(f"unknown target '{target}'", fix=f"use one of: {', '.join(TARGETS)}")
    if target == "ort":
        return list(names)
    out = []
    for name in (n.strip() for n in names):
        if name in ("fuse-gelu", "fuse-gelu-cpu", "fuse-matmul"):
            raise PassError(f"pass '{name}' writes ONNX Runtime com.microsoft ops, which a standard target refuses",
                            fix="drop it from --passes, or use --target ort")
        out.append(STANDARD_VARIANTS.get(name, name))
    return out


def ort_disabled_optimizers(passes: Sequence[Pass]) -> list[str]:
    """The ONNX Runtime load-time fusions the passes ask to disable (they would undo a pass's choice), sorted."""
    return sorted({name for p in passes for name in getattr(p, "ort_disabled_optimizers", ())})


def preset_passes(preset: str) -> tuple[str, ...]:
    """The pass names of a preset; raises PassError for an unknown preset."""
    if preset not in PRESETS:
        raise PassError(f"unknown preset '{preset}'", fix=f"use one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


@dataclass
class PipelineResult:
    """The final model, one entry per pass run (name, stats, seconds, check), and the first failing pass."""

    model: ir.Model
    steps: list[dict[str, Any]] = field(default_factory=list)
    failed_pass: str | None = None


class Pipeline:
    """An ordered list of passes. Build it from names (`Pipeline.from_names`) or Pass objects."""

    def __init__(self, passes: Sequence[Pass]) -> None:
        names = [p.name for p in passes]
        if len(set(names)) != len(names):
            raise PassError("a pipeline names the same pass twice", found=", ".join(names))
        self.passes = list(passes)

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Pipeline:
        """A pipeline of registered passes, in the given order."""
        cleaned = [n.strip() for n in names if n.strip()]
        if not cleaned:
            raise PassError("the pass list is empty", fix="give --passes a,b,c or --preset NAME")
        return cls([get_pass(n) for n in cleaned])

    @property
    def names(self) -> list[str]:
        """The pass names, in order."""
        return [p.name for p in self.passes]

    def run(
        self,
        model: ir.Model,
        *,
        check_cases: Cases | None = None,
        tolerance: Mapping[str, float] | None = None,
        explain: bool = False,
        raise_on_failure: bool = True,
        threads: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> PipelineResult:
        """Run every pass in order (the model is rewritten in place).

        With `check_cases`, ONNX Runtime runs the unoptimized model once and the model after every
        pass on those feeds; each pass's outputs are compared to the unoptimized ones within
        `tolerance` (atol/rtol; a pass may declare a looser `tolerance` of its own, e.g. fp16, which
        holds from then on) and to the previous pass's. The first pass past tolerance stops the
        pipeline: PassCheckFailed names it (or `failed_pass` is set when not `raise_on_failure`).
        """
        tol = {"atol": float((tolerance or {}).get("atol", 1e-4)), "rtol": float((tolerance or {}).get("rtol", 1e-3))}
        result = PipelineResult(model)
        baseline = previous = None
        if check_cases:
            baseline = previous = _ort.run_cases(_ort.session(model, threads=threads), check_cases)
        for p in self.passes:
            if progress:
                progress(f"pass {p.name}")
            before = op_histogram(result.model)
            start = time.perf_counter()
            out = p(result.model, explain=explain)
            seconds = time.perf_counter() - start
            after = op_histogram(out.model)
            step: dict[str, Any] = {"name": p.name, "seconds": round(seconds, 3), "stats": out.stats,
                                    "nodes": {"before": sum(before.values()), "after": sum(after.values())}}
            result.model = out.model
            logger.info("pass %s: %s (%.2fs)", p.name, out.stats, seconds)
            pass_tol = getattr(p, "tolerance", None)
            if pass_tol:
                tol = {k: max(tol[k], float(pass_tol.get(k, tol[k]))) for k in tol}
            if check_cases:
                current = _ort.run_cases(_ort.session(result.model, threads=threads), check_cases,
                                         list(baseline[0]))
                step["check"] = _compare(check_cases, baseline, previous, current, tol)
                previous = current
            result.steps.append(step)
            if check_cases and not step["check"]["passed"]:
                result.failed_pass = p.name
                worst = step["check"]["worst"]
                if raise_on_failure:
                    raise PassCheckFailed(
                        f"pass '{p.name}' changed the outputs past the tolerance "
                        f"(atol {tol['atol']:g}, rtol {tol['rtol']:g})",
                        pass_name=p.name,
                        found=f"{worst['case']} / {worst['output']}: {worst.get('reason', '')}, "
                              f"max abs error {worst.get('max_abs', float('nan')):.3g}",
                        fix=f"drop '{p.name}' from the pass list, or report the graph it breaks",
                        steps=result.steps,
                    )
                break
        return result


def _compare(cases: Cases, baseline, previous, current, tol: dict[str, float]) -> dict[str, Any]:
    outputs = []
    for (case, _), base, prev, cur in zip(cases, baseline, previous, current, strict=True):
        for name, expected in base.items():
            d = _ort.diff(cur[name], expected, tol["atol"], tol["rtol"])
            step_diff = _ort.diff(cur[name], prev[name], tol["atol"], tol["rtol"])
            outputs.append({"case": case, "output": name, **d, "max_abs_vs_previous": step_diff.get("max_abs")})
    failing = [o for o in outputs if not o["passed"]]
    worst = failing[0] if failing else max(outputs, key=lambda o: o.get("max_abs", 0.0), default={})
    return {"passed": not failing, "tolerance": dict(tol), "worst": worst,
            "max_abs": max((o.get("max_abs", 0.0) for o in outputs), default=0.0)}
