"""The matrix runner: expand a recipe into cells and run each in its own process with a time limit.

A cell is one model × format variant × preset × runtime. Cells whose runtime cannot run the format are
left out and listed as skipped. The local executor runs up to `jobs` cell processes at a time; a cell
that crashes or runs past its limit is that cell's failure only. The result is the CI JSON report,
the source of truth for the JUnit and HTML views.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tracefuse import __version__
from tracefuse.jobs.recipe import Recipe

logger = logging.getLogger(__name__)

REPORT_KIND = "tracefuse-ci"


@dataclass(frozen=True)
class Cell:
    """One unit of the matrix, everything its process needs to run."""

    id: str
    model: str
    source: str
    task: str | None
    format_name: str
    format: str
    options: dict[str, Any]
    preset: str
    runtime: str
    tolerance: dict[str, float]
    timeout_s: float
    cache_dir: str
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec the cell process reads."""
        return asdict(self)


def runs_format(runtime: str, fmt: str) -> bool:
    """Whether `runtime` can run artifacts of format `fmt`: the runner's `formats` attribute when it has one,
    else the format's default runtime, else ONNX for `ort-*` runtimes."""
    import importlib

    from tracefuse.runtimes import DEFAULT_RUNTIME, RUNTIMES

    target = RUNTIMES.get(runtime, "")
    try:
        module_name, cls = target.split(":")
        formats = getattr(getattr(importlib.import_module(module_name), cls), "formats", None)
    except (ValueError, ImportError, AttributeError):
        formats = None
    if formats:
        return fmt in formats
    return DEFAULT_RUNTIME.get(fmt) == runtime or (fmt == "onnx" and runtime.startswith("ort-"))


def expand(recipe: Recipe, *, jobs: int | None = None) -> tuple[list[Cell], list[dict[str, str]]]:
    """The recipe's cells in a stable order, and the combinations left out (with why)."""
    jobs = jobs or recipe.jobs
    threads = max(1, (os.cpu_count() or 1) // jobs)
    cells, skipped = [], []
    for m in recipe.models:
        for fname in m.formats:
            variant = recipe.formats[fname]
            for preset in m.presets:
                for runtime in m.runtimes:
                    cid = f"{m.name}/{fname}/{preset}/{runtime}"
                    if not runs_format(runtime, variant.format):
                        skipped.append({"id": cid, "reason": f"runtime {runtime} does not run {variant.format}"})
                        continue
                    tol, options, timeout = dict(m.tolerance), {**variant.options, **m.options}, m.timeout_s
                    for o in m.overrides:
                        if all(v is None or v == got for v, got in
                               ((o.format, fname), (o.runtime, runtime), (o.preset, preset))):
                            tol.update(o.tolerance)
                            options.update(o.options)
                            timeout = o.timeout_s or timeout
                    cells.append(Cell(cid, m.name, m.source, m.task, fname, variant.format, options, preset,
                                      runtime, tol, timeout, str(recipe.cache_dir.absolute()), threads))
    return cells, skipped


# transformers.modeling_utils (+ activations) is most of the import time of any Transformers model class:
# loaded once here, it saves every Transformers cell that time (~3-10 s each, more on a busy machine).
_PRELOAD = ["tracefuse.jobs.cell", "tracefuse.api", "tracefuse.exporters.sources", "torch", "onnxruntime",
            "transformers.modeling_utils", "transformers.activations"]
_forkserver = None


def _context():
    """A forkserver that has imported torch, ONNX Runtime and tracefuse once; each cell forks a fresh child
    from it, so a cell is its own process (a crash or kill touches nothing else) without paying the imports."""
    global _forkserver
    if _forkserver is None:
        import multiprocessing

        _forkserver = multiprocessing.get_context("forkserver")
        _forkserver.set_forkserver_preload(_PRELOAD)
    return _forkserver


def _finish(cell: Cell, code: int | None, result_path: Path, log_path: Path, wall: float) -> dict[str, Any]:
    if code is None:
        result = {"status": "timeout", "message": f"the cell ran past its time limit of {cell.timeout_s:g} s "
                  "and was killed", "failures": []}
    elif result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
        result = {"status": "error", "message": f"the cell process died with exit code {code} before writing "
                  f"its result; last output:\n{tail}", "failures": []}
    return {**cell.to_spec(), **result, "wall_s": round(wall, 3), "log": str(log_path)}


def _prepare(cell: Cell, work: Path) -> tuple[Path, Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = work / "spec.json", work / "result.json", work / "cell.log"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(cell.to_spec()))
    return spec_path, result_path, log_path


def run_cell_forked(cell: Cell, work: Path) -> dict[str, Any]:
    """Run one cell in a child of the preloaded forkserver with its time limit (the default runner)."""
    from tracefuse.jobs.cell import entry

    spec_path, result_path, log_path = _prepare(cell, work)
    start = time.perf_counter()
    proc = _context().Process(target=entry, args=(str(spec_path), str(result_path), str(log_path)), daemon=True)
    proc.start()
    proc.join(cell.timeout_s)
    code = proc.exitcode
    if code is None:
        proc.kill()
        proc.join()
    return _finish(cell, code, result_path, log_path, time.perf_counter() - start)


def run_cell_process(cell: Cell, work: Path) -> dict[str, Any]:
    """Run one cell in a fresh Python interpreter (`python -m tracefuse.jobs.cell`) with its time limit."""
    spec_path, result_path, log_path = _prepare(cell, work)
    env = {**os.environ, "OMP_NUM_THREADS": str(cell.threads or 1), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tracefuse.jobs.cell", str(spec_path), str(result_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=cell.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return _finish(cell, code, result_path, log_path, time.perf_counter() - start)


Runner = Callable[[Cell, Path], dict[str, Any]]


def run_local(cells: Sequence[Cell], work_dir: Path, *, jobs: int = 1, runner: Runner = run_cell_forked,
              on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run cells, `jobs` at a time, each in its own process; results come back in cell order."""
    def one(index_cell: tuple[int, Cell]) -> dict[str, Any]:
        index, cell = index_cell
        result = runner(cell, work_dir / f"{index:03d}-{cell.id.replace('/', '__')}")
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, enumerate(cells)))


def build_report(recipe: Recipe, results: list[dict[str, Any]], skipped: list[dict[str, str]],
                 started: float, cache_events: list[dict[str, Any]]) -> dict[str, Any]:
    """The CI JSON report: summary counts, every cell's result, the skipped combinations and cache use."""
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "error", "timeout")}
    return {
        "kind": REPORT_KIND, "tracefuse_version": __version__, "recipe": str(recipe.path),
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 3),
        "passed": bool(results) and counts["pass"] == len(results),
        "summary": {"cells": len(results), **counts, "skipped": len(skipped)},
        "cache": {"dir": str(recipe.cache_dir.absolute()), "exports": sum(e["event"] == "export" for e in cache_events),
                  "hits": sum(e["event"] == "hit" for e in cache_events)},
        "cells": results, "skipped": skipped,
    }


def run_recipe(recipe: Recipe, *, jobs: int | None = None, runner: Runner = run_cell_forked,
               on_done: Callable[[dict[str, Any]], None] | None = None, executor: Any = None) -> dict[str, Any]:
    """Expand and run a recipe; returns the CI JSON report.

    `executor` is a `tracefuse.jobs.executors` executor (default: the local one with `runner`)."""
    from tracefuse.jobs.cache import ExportCache
    from tracefuse.jobs.executors import LocalExecutor

    executor = executor or LocalExecutor(runner)

    started = time.time()
    jobs = jobs or recipe.jobs
    cells, skipped = expand(recipe, jobs=jobs)
    cache = ExportCache(recipe.cache_dir)
    before = len(cache.events())
    recipe.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=recipe.work_dir))
    logger.info("running %d cells (%d skipped) with %d jobs on the %s executor in %s", len(cells), len(skipped),
                jobs, executor.name, work)
    results = executor.run(cells, work, jobs=jobs, on_done=on_done)
    report = build_report(recipe, results, skipped, started, cache.events()[before:])
    report["executor"] = executor.name
    return report
