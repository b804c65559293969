"""`export --optimize PRESET --quantize MODE`: export, optimize and quantize in one call.

Each step writes its artifact into a private working directory beside the output and is validated as
the step is on its own (export and optimize elementwise against PyTorch, quantize by cosine / top-1);
the next step reads it. Only the last step writes to `out` (atomically, as every step does); the
intermediate artifacts are deleted whether the chain succeeds or not. An intermediate step whose
validation fails stops the chain: nothing is written to `out`, and that step's report is returned; the
last step, like `tracefuse optimize` / `quantize`, writes its artifact even when its validation fails
(its manifest records the failure). The final
manifest keeps the passes of every step (`passes`) and a summary of every step, its validation
included, in `export["chain"]`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.artifact import Artifact, _refuse_existing
from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChainResult:
    """The final artifact (None when a step failed validation), the report of the last step run, and the
    summary of every step run (name, options, seconds, validation)."""

    artifact: Artifact | None
    report: dict[str, Any] | None
    steps: list[dict[str, Any]] = field(default_factory=list)


def _noop(_: str) -> None:
    pass


def _summary(name: str, options: dict[str, Any], seconds: float, report: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": name, "options": options, "seconds": round(seconds, 3)}
    if report is not None:
        entry["validation"] = {"passed": bool(report["passed"]), "criterion": report.get("criterion"),
                               "runtime": report.get("runtime"),
                               "cases": [c["name"] for c in report.get("cases", [])]}
    return entry


def export_chain(
    model: str,
    out: str | os.PathLike[str],
    *,
    optimize: str | None = None,
    quantize: str | None = None,
    export_options: dict[str, Any] | None = None,
    quantize_options: dict[str, Any] | None = None,
    validate: bool = True,
    overwrite: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
) -> ChainResult:
    """Export `model` to ONNX, then optimize it with the `optimize` preset and/or quantize it in `quantize`
    mode; only the final artifact is written, at `out`.

    `export_options` are passed to `api.export` (task, opset, exporter, max_memory, ...);
    `quantize_options` to `api_passes.quantize` (target_cosine, target_top1, calibration, ...).
    """
    from tracefuse import api, api_passes
    from tracefuse.passes.manager import preset_passes
    from tracefuse.passes.quantize import MODES

    export_options = dict(export_options or {})
    if export_options.get("format", "onnx") != "onnx":
        raise TracefuseError("--optimize / --quantize rewrite ONNX graphs",
                             found=f"--format {export_options['format']}", fix="export with --format onnx")
    if optimize is None and quantize is None:
        raise TracefuseError("nothing to chain after the export", fix="give --optimize PRESET and/or --quantize MODE")
    if optimize is not None:
        preset_passes(optimize)  # an unknown preset fails before the export, not after it
    if quantize is not None and quantize not in MODES:
        raise TracefuseError(f"unknown quantization mode '{quantize}'", fix=f"use one of: {', '.join(MODES)}")
    target = Path(out).absolute()
    _refuse_existing(overwrite)(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.chain-", dir=target.parent))
    steps: list[dict[str, Any]] = []
    common = {"validate": validate, "inputs": inputs, "texts": texts, "threads": threads, "progress": progress}
    plan = ["export"] + (["optimize"] if optimize else []) + (["quantize"] if quantize else [])
    try:
        start = time.perf_counter()
        last = plan[-1]
        current = work / "export"
        exported = api.export(model, current, **export_options, **common)
        steps.append(_summary("export", {k: v for k, v in export_options.items() if v is not None},
                              time.perf_counter() - start, exported.report))
        if exported.report is not None and not exported.report["passed"]:
            return ChainResult(None, exported.report, steps)
        result: Any = None
        for name in plan[1:]:
            dest = target if name == last else work / name
            start = time.perf_counter()
            record = {"steps_before": list(steps), "step": name}
            if name == "optimize":
                result = api_passes.optimize(current, dest, preset=optimize, overwrite=overwrite, chain=record,
                                             **common)
                options: dict[str, Any] = {"preset": optimize}
            else:
                result = api_passes.quantize(current, dest, mode=quantize, overwrite=overwrite, chain=record,
                                             **(quantize_options or {}), **common)
                options = {"mode": quantize, **{k: v for k, v in (quantize_options or {}).items() if v is not None}}
            steps.append({**_summary(name, options, time.perf_counter() - start, result.report),
                          "passes": [e["name"] for e in result.passes]})
            if result.report is not None and not result.report["passed"]:
                # As `tracefuse optimize` / `quantize` do, a last step that fails validation still writes its
                # artifact (its manifest says it failed); a failed intermediate step writes nothing at out.
                return ChainResult(result.artifact if dest == target else None, result.report, steps)
            current = dest
        return ChainResult(result.artifact, result.report, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def chain_record(chain: dict[str, Any], entries: list[dict[str, Any]],
                 report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The manifest's `export["chain"]`: the steps before this one, then this one (its passes, seconds and
    validation)."""
    this = _summary(chain["step"], {}, sum(float(e.get("seconds", 0.0)) for e in entries), report)
    this.pop("options")
    this["passes"] = [e["name"] for e in entries]
    return [*chain["steps_before"], this]
