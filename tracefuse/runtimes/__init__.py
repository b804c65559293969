"""Runtimes: one module per runtime, each a Runner. Optional runtimes are imported lazily.

RUNTIMES maps a runtime name to `module:class`; the class takes `(artifact, threads=...)`, and the GPU runners
also take runtime options (`**options`, see tracefuse.runtimes.gpu_config.OPTION_HELP).
DEFAULT_RUNTIME names the runtime used for each artifact format when none is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from tracefuse.artifact import Artifact
from tracefuse.errors import TracefuseError
from tracefuse.runtimes.base import Runner

RUNTIMES: dict[str, str] = {
    "ort-cpu": "tracefuse.runtimes.ort_cpu:OrtCpuRunner",
    "onnx-reference": "tracefuse.runtimes.onnx_reference:OnnxReferenceRunner",
    "torchscript": "tracefuse.runtimes.torchscript:TorchScriptRunner",
    "pt2": "tracefuse.runtimes.pt2:Pt2Runner",
    "litert": "tracefuse.runtimes.litert:LiteRtRunner",
    "ort-cuda": "tracefuse.runtimes.ort_gpu:OrtCudaRunner",
    "ort-trt": "tracefuse.runtimes.ort_gpu:OrtTrtRunner",
    "tensorrt": "tracefuse.runtimes.trt_runner:TensorRtRunner",
}
OPTION_RUNTIMES = ("ort-cuda", "ort-trt", "tensorrt")
DEFAULT_RUNTIME: dict[str, str] = {
    "onnx": "ort-cpu",
    "torchscript": "torchscript",
    "pt2": "pt2",
    "tflite": "litert",
    "tensorrt": "tensorrt",
}


def default_runtime(fmt: str) -> str:
    """The runtime that runs artifacts of format `fmt` when none is asked for."""
    try:
        return DEFAULT_RUNTIME[fmt]
    except KeyError:
        raise TracefuseError(f"no runtime runs '{fmt}' artifacts", fix="re-export to another format") from None


def open_runner(artifact: Artifact, runtime: str | None = None, *, threads: int | None = None,
                options: dict[str, Any] | None = None) -> Runner:
    """A runner for `artifact` on `runtime` (the format's default when None); not yet opened.

    `options` are runtime options (only the GPU runners take them; others refuse them).
    """
    runtime = runtime or default_runtime(artifact.manifest.format)
    target = RUNTIMES.get(runtime)
    if target is None:
        raise TracefuseError(f"unknown runtime '{runtime}'", fix=f"use one of: {', '.join(RUNTIMES)}")
    if options and runtime not in OPTION_RUNTIMES:
        raise TracefuseError(f"runtime '{runtime}' takes no runtime options", found=", ".join(options),
                             fix=f"drop --runtime-option, or use one of: {', '.join(OPTION_RUNTIMES)}")
    module_name, cls = target.split(":")
    return getattr(importlib.import_module(module_name), cls)(artifact, threads=threads, **(options or {}))
