"""The public API of the optimization stage: `optimize` (a pass pipeline) and `quantize`.

Each reads an ONNX artifact, rewrites its graph, writes a NEW artifact (the manifest copied, the graph
replaced, the passes and their statistics appended to `manifest.passes`, the io specs kept), then
validates the new artifact against PyTorch as `api.validate` does. Nothing is edited in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact, finalize, load_artifact, staged_artifact, write_manifest
from tracefuse.errors import ArtifactError, TracefuseError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PassRunResult:
    """What `optimize` / `quantize` produced: the new artifact, its validation report, and the pass entries."""

    artifact: Artifact
    report: dict[str, Any] | None
    passes: list[dict[str, Any]]


def _noop(_: str) -> None:
    pass


def _onnx_artifact(path: str | os.PathLike[str]) -> Artifact:
    art = load_artifact(path)
    if art.manifest.format != "onnx":
        raise ArtifactError(f"graph passes rewrite ONNX artifacts; {path} is a {art.manifest.format} artifact",
                            fix="export with --format onnx")
    return art


def _check_cases(art: Artifact, inputs, texts: Sequence[str] | None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The validation inputs: generated at the manifest's shapes, plus an .npz, plus tokenized sentences."""
    from tracefuse.api import _cases

    checkpoint = None
    if texts:
        from tracefuse.exporters.sources import load_source

        m = art.manifest
        checkpoint = load_source(m.source.get("path") or m.source.get("id"), None if m.task == "custom" else
                                 m.task).checkpoint_dir
    return _cases(art.manifest, inputs, texts, checkpoint)


def _graph_sha(art: Artifact) -> str:
    return str(art.manifest.files.get(art.manifest.graph, {}).get("sha256", ""))


def _write(art: Artifact, out, model, entries: list[dict[str, Any]], tolerance: dict[str, float], *,
           overwrite: bool, validate: bool, inputs, texts, threads, progress: Progress,
           min_cosine: float | None = None, min_top1: float | None = None,
           chain: dict[str, Any] | None = None, runtime_hints: dict[str, Any] | None = None) -> PassRunResult:
    """Stage a new artifact: copy the side files, save the graph, append the pass entries, validate.

    `chain` (from api_chain) names this step and carries the summaries of the steps before it; the
    manifest's `export["chain"]` then lists them all, this step's validation included. `runtime_hints`
    replaces the manifest's (how runtimes should open the graph); by default they are kept.
    """
    from tracefuse import api
    from tracefuse.graphs.onnx_file import save_onnx
    from tracefuse.validation.report import judge_by_cosine, judge_by_top1, summarize

    m = art.manifest
    report = None
    with staged_artifact(out, overwrite=overwrite) as staging:
        progress("writing the new artifact")
        graph_files = {m.graph, f"{m.graph}.data"}
        for name in m.files:
            if name not in graph_files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(art.path / name, staging / name)
        save_onnx(model, staging / m.graph)
        manifest = dataclasses.replace(
            m, passes=tuple(m.passes) + tuple(entries), tolerance=tolerance, validation=None,
            tool_versions={**m.tool_versions, **api.tool_versions()},
            runtime_hints=dict(m.runtime_hints if runtime_hints is None else runtime_hints))
        manifest = finalize(staging, manifest)
        if validate:
            report = api.validate(staging, inputs=inputs, texts=texts, threads=threads, progress=progress,
                                  tolerance=tolerance)
            if min_top1 is not None:
                judge_by_top1(report, min_top1, min_cosine if min_cosine is not None else 0.99)
            elif min_cosine is not None:
                judge_by_cosine(report, min_cosine)
            report["artifact"] = str(Path(out).absolute())
            manifest = dataclasses.replace(manifest, validation=summarize(report))
        if chain is not None:
            from tracefuse.api_chain import chain_record

            manifest = dataclasses.replace(manifest, export={**manifest.export, "chain": chain_record(chain, entries,
                                                                                                       report)})
        if validate or chain is not None:
            write_manifest(staging, manifest)
    return PassRunResult(load_artifact(out), report, entries)


def optimize(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    passes: Sequence[str] | None = None,
    target: str = "ort",
    check: bool = False,
    explain: bool = False,
    validate: bool = True,
    overwrite: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
    chain: dict[str, Any] | None = None,
) -> PassRunResult:
    """Run a pass pipeline (a `preset` — cpu, cuda, tensorrt, standard — or explicit `passes`) on an ONNX
    artifact and write the result to `out`.

    With `check`, ONNX Runtime runs after every pass on the validation inputs and the first pass that
    moves the outputs past the manifest's tolerance raises PassCheckFailed (exit code 1) naming it; no
    artifact is written then. With `explain`, each fusion's stats say why unfused blocks did not match.
    `target` "standard" turns a pass list's fusions into their standard-op variants (opset-23 Attention,
    RMSNormalization; no com.microsoft ops); the standard and tensorrt presets are standard already.
    `chain` is set by `api_chain.export_chain` (the steps before this one, recorded in the manifest).
    """
    from tracefuse.graphs.onnx_file import load_onnx
    from tracefuse.passes.manager import Pipeline, for_target, ort_disabled_optimizers, preset_passes

    if (preset is None) == (not passes):
        raise TracefuseError("give exactly one of a preset or a pass list",
                             fix="use --preset cpu|cuda|tensorrt|standard, or --passes a,b,c")
    names = list(preset_passes(preset)) if preset else for_target(list(passes or ()), target)
    pipeline = Pipeline.from_names(names)
    progress(f"loading artifact {artifact}")
    art = _onnx_artifact(artifact)
    model = load_onnx(art.graph_path)
    cases = _check_cases(art, inputs, texts) if check else None
    start = time.perf_counter()
    result = pipeline.run(model, check_cases=cases, tolerance=art.manifest.tolerance, explain=explain,
                          threads=threads, progress=progress)
    logger.info("pipeline %s took %.2fs", names, time.perf_counter() - start)
    tolerance = dict(art.manifest.tolerance)
    for p in pipeline.passes:
        for key, value in (getattr(p, "tolerance", None) or {}).items():
            tolerance[key] = max(float(tolerance.get(key, 0.0)), float(value))
    entries = [{**step, "preset": preset, "input_graph_sha256": _graph_sha(art)} for step in result.steps]
    hints = _disable_ort_optimizers(art.manifest.runtime_hints, ort_disabled_optimizers(pipeline.passes))
    return _write(art, out, result.model, entries, tolerance, overwrite=overwrite, validate=validate,
                  inputs=inputs, texts=texts, threads=threads, progress=progress, chain=chain,
                  runtime_hints=hints)


def _disable_ort_optimizers(hints: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The runtime hints with `names` added to ONNX Runtime's disabled load-time optimizers."""
    if not names:
        return dict(hints)
    ort_hints = dict(hints.get("onnxruntime") or {})
    ort_hints["disabled_optimizers"] = sorted(set(ort_hints.get("disabled_optimizers") or ()) | set(names))
    return {**hints, "onnxruntime": ort_hints}


def quantize(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mode: str = "dynamic",
    calibration: str | os.PathLike[str] | None = None,
    calibration_method: str = "minmax",
    calibration_samples: int = 8,
    per_channel: bool = False,
    block_size: int = 32,
    target_cosine: float | None = None,
    target_top1: float | None = None,
    min_cosine: float = 0.99,
    validate: bool = True,
    overwrite: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
    chain: dict[str, Any] | None = None,
) -> PassRunResult:
    """Quantize an ONNX artifact (`mode` dynamic | static | int4) and write the result to `out`.

    Static mode calibrates on `calibration` (an .npz of named inputs) or, without it, on
    `calibration_samples` inputs generated from the artifact's specs. With `target_cosine`, the
    quantized graph is compared to the float one on the validation inputs and the most sensitive
    nodes are kept in float until the worst cosine meets the target; the excluded nodes are recorded
    in the manifest. With `target_top1` instead, the guard's criterion is the worst top-1 agreement of
    the logits outputs. Validation against PyTorch passes when every output's cosine is at least
    `target_cosine` (or `min_cosine` without a target); with `target_top1`, when every logits output's
    top-1 agreement is at least `target_top1` and every other output's cosine at least `min_cosine`.
    """
    from tracefuse.graphs.onnx_file import load_onnx
    from tracefuse.passes.quantize import QuantizeOptions, check_options
    from tracefuse.passes.quantize import quantize as run_quantize
    from tracefuse.validation.inputs import generate_inputs, load_npz

    progress(f"loading artifact {artifact}")
    art = _onnx_artifact(artifact)
    cases = _check_cases(art, inputs, texts)
    calib: tuple[dict[str, np.ndarray], ...] = ()
    if mode == "static":
        if calibration is not None:
            calib = (load_npz(calibration),)
        else:
            # Real sentences, when given, calibrate far better than generated token ids.
            calib = tuple(feeds for name, feeds in cases if name.startswith("text:"))
            shapes = art.manifest.validation_shapes or ({},)
            calib += tuple(generate_inputs(art.manifest.inputs, shapes[i % len(shapes)], seed=100 + i)
                           for i in range(calibration_samples))
    options = QuantizeOptions(mode=mode, per_channel=per_channel, calibration_method=calibration_method,
                              calibration=calib, block_size=block_size)
    check_options(options)
    model = load_onnx(art.graph_path)
    start = time.perf_counter()
    result = run_quantize(model, options, cases, target_cosine=target_cosine, target_top1=target_top1,
                          threads=threads, progress=progress)
    entry = {"name": f"quantize-{mode}", "seconds": round(time.perf_counter() - start, 3), "stats": result.stats,
             "input_graph_sha256": _graph_sha(art)}
    tolerance = dict(art.manifest.tolerance)
    # Later validations compare elementwise: allow twice the error measured now against the float graph.
    tolerance["atol"] = max(float(tolerance.get("atol", 1e-4)), _round_up(2 * result.stats["max_abs"]))
    threshold = target_cosine if target_cosine is not None else min_cosine
    tolerance["min_cosine"] = threshold
    if target_top1 is not None:
        tolerance["min_top1"] = target_top1
    return _write(art, out, result.model, [entry], tolerance, overwrite=overwrite, validate=validate,
                  inputs=inputs, texts=texts, threads=threads, progress=progress, min_cosine=threshold,
                  min_top1=target_top1, chain=chain)


def _round_up(x: float) -> float:
    """x rounded up to two significant digits (0 stays 0)."""
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(x / scale) * scale


def graph_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a graph file (for tests and tools comparing artifacts)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
