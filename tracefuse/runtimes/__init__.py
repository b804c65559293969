"""Runtimes: one module per runtime, each a Runner. Optional runtimes are imported lazily.

RUNTIMES maps a runtime name to `module:class`; the class takes `(artifact, threads=...)`.
DEFAULT_RUNTIME names the runtime used for each artifact format when none is asked for.
"""

from __future__ import annotations

import importlib

from tracefuse.artifact import Artifact
from tracefuse.errors import TracefuseError
from tracefuse.runtimes.base import Runner

RUNTIMES: dict[str, str] = {
    "ort-cpu": "tracefuse.runtimes.ort_cpu:OrtCpuRunner",
    "torchscript": "tracefuse.runtimes.torchscript:TorchScriptRunner",
    "pt2": "tracefuse.runtimes.pt2:Pt2Runner",
    "litert": "tracefuse.runtimes.litert:LiteRtRunner",
}
DEFAULT_RUNTIME: dict[str, str] = {
    "onnx": "ort-cpu",
    "torchscript": "torchscript",
    "pt2": "pt2",
    "tflite": "litert",
}


def default_runtime(fmt: str) -> str:
    """The runtime that runs artifacts of format `fmt` when none is asked for."""
    try:
        return DEFAULT_RUNTIME[fmt]
    except KeyError:
        raise TracefuseError(f"no runtime runs '{fmt}' artifacts", fix="re-export to another format") from None


def open_runner(artifact: Artifact, runtime: str | None = None, *, threads: int | None = None) -> Runner:
    """A runner for `artifact` on `runtime` (the format's default when None); not yet opened."""
    runtime = runtime or default_runtime(artifact.manifest.format)
    target = RUNTIMES.get(runtime)
    if target is None:
        raise TracefuseError(f"unknown runtime '{runtime}'", fix=f"use one of: {', '.join(RUNTIMES)}")
    module_name, cls = target.split(":")
    return getattr(importlib.import_module(module_name), cls)(artifact, threads=threads)
