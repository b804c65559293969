"""`tracefuse compile --target tensorrt`: a TensorRT engine artifact built from an ONNX artifact.

The new artifact has format `tensorrt`, graph `model.engine`, the source artifact's inputs, outputs,
source and pass history, and in `export.tensorrt` the build report: TensorRT version, GPU, optimization
profile, engine cache key, flags, parse errors and the layer precisions. An engine runs only on the GPU
model and TensorRT version it was built with; the `tensorrt` runner refuses others with a clear error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracefuse.artifact import Artifact, finalize, load_artifact, staged_artifact, write_manifest
from tracefuse.errors import ArtifactError, TracefuseError

logger = logging.getLogger(__name__)
TARGETS = ("tensorrt",)
ENGINE_NAME = "model.engine"


@dataclass(frozen=True)
class CompileResult:
    """The engine artifact, the build report, and the validation report (None without validation)."""

    artifact: Artifact
    build: dict[str, Any]
    report: dict[str, Any] | None


def compile_artifact(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    target: str = "tensorrt",
    runtime_options: Mapping[str, Any] | None = None,
    validate: bool = True,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> CompileResult:
    """Build a TensorRT engine from the ONNX `artifact` into a new artifact at `out`, then (with `validate`)
    validate it on the `tensorrt` runtime against PyTorch.

    `runtime_options` are the GPU runtime options (shapes, fp16, strongly_typed, workspace, cache_dir,
    device_id; see tracefuse.runtimes.gpu_config.OPTION_HELP).
    """
    from tracefuse import api
    from tracefuse.runtimes.gpu_config import gpu_options, validation_tolerance
    from tracefuse.runtimes.trt_build import engine_for
    from tracefuse.validation.report import summarize

    if target not in TARGETS:
        raise TracefuseError(f"unknown compile target '{target}'", fix=f"use one of: {', '.join(TARGETS)}")
    art = load_artifact(artifact)
    if art.manifest.format != "onnx":
        raise ArtifactError("tracefuse compile --target tensorrt builds from an ONNX artifact",
                            found=f"a {art.manifest.format} artifact", fix="export with --format onnx first")
    opts = gpu_options(runtime_options)
    progress("building the TensorRT engine")
    engine, profile, build = engine_for(art, opts)
    for error in build.get("parse_errors", []):
        logger.warning("TensorRT parser: %s", error)
    m = art.manifest
    fp16_kernels = bool(opts.fp16 or opts.tf32)
    tolerance = dict(m.tolerance)
    for key, value in validation_tolerance(m, fp16_kernels=fp16_kernels).items():
        tolerance[key] = max(float(tolerance.get(key, 0.0)), value)
    report = None
    with staged_artifact(out, overwrite=overwrite) as staging:
        for name in m.files:
            if name not in (m.graph, f"{m.graph}.data"):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(art.path / name, staging / name)
        (staging / ENGINE_NAME).write_bytes(engine)
        record = {**build, "profile": {k: [list(s) for s in v] for k, v in profile.items()},
                  "onnx_sha256": m.files.get(m.graph, {}).get("sha256")}
        manifest = dataclasses.replace(
            m, format="tensorrt", graph=ENGINE_NAME, export={**m.export, "tensorrt": record}, tolerance=tolerance,
            validation=None, tool_versions={**m.tool_versions, **api.tool_versions(),
                                            "tensorrt": str(build.get("tensorrt"))})
        manifest = finalize(staging, manifest)
        if validate:
            progress("validating the engine against PyTorch")
            report = api.validate(staging, runtime="tensorrt", progress=progress,
                                  runtime_options={"device_id": opts.device_id})
            report["artifact"] = str(Path(out).absolute())
            manifest = dataclasses.replace(manifest, validation=summarize(report))
            write_manifest(staging, manifest)
    return CompileResult(load_artifact(out), record, report)
