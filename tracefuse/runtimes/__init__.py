"""Runtimes: one module per runtime, each a Runner. Optional runtimes are imported lazily."""

from __future__ import annotations

from tracefuse.artifact import Artifact
from tracefuse.errors import TracefuseError
from tracefuse.runtimes.base import Runner

RUNTIMES = ("ort-cpu",)


def open_runner(artifact: Artifact, runtime: str = "ort-cpu", *, threads: int | None = None) -> Runner:
    """A runner for `artifact` on `runtime` (not yet opened)."""
    if runtime == "ort-cpu":
        from tracefuse.runtimes.ort_cpu import OrtCpuRunner

        return OrtCpuRunner(artifact, threads=threads)
    raise TracefuseError(f"unknown runtime '{runtime}'", fix=f"use one of: {', '.join(RUNTIMES)}")
