"""Executors: where the cells of a matrix run.

- `LocalExecutor` (the default): up to `jobs` cells at a time on this machine, each in its own process
  forked from a preloaded forkserver, killed at its time limit (see `matrix.run_cell_forked`).
- `RayExecutor`: each cell is a Ray task on an existing cluster (`address`) or on a local Ray instance
  started for the run. A task runs in a worker process that exits after the cell (`max_calls=1`), so a
  cell's crash kills only its worker and becomes that cell's `error`; a cell past its time limit is
  cancelled (`ray.cancel(force=True)`, which kills the worker) and becomes its `timeout`.

Both return one result dict per cell, in cell order, with the same keys; the export cache directory in
each cell's spec must be visible at the same path to every process that runs a cell (on a cluster:
shared storage), since its per-key file locks are what keep two cells from exporting the same key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tracefuse.errors import MissingDependencyError, TracefuseError
from tracefuse.jobs.matrix import Cell, Runner, run_cell_forked, run_local

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'tracefuse[ray]'"
OnDone = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    """Runs cells and returns one result dict per cell, in cell order."""

    name: str

    def run(self, cells: Sequence[Cell], work_dir: Path, *, jobs: int = 1,
            on_done: OnDone | None = None) -> list[dict[str, Any]]:
        """Run every cell, at most `jobs` at a time; a cell's crash or timeout is that cell's result."""
        ...


class LocalExecutor:
    """Cells as processes on this machine (`runner`: forked from the forkserver, or a fresh interpreter)."""

    name = "local"

    def __init__(self, runner: Runner = run_cell_forked) -> None:
        self.runner = runner

    def run(self, cells: Sequence[Cell], work_dir: Path, *, jobs: int = 1,
            on_done: OnDone | None = None) -> list[dict[str, Any]]:
        """Run the cells `jobs` at a time, each in its own process with its time limit."""
        return run_local(cells, work_dir, jobs=jobs, runner=self.runner, on_done=on_done)


def _ray_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Body of a cell's Ray task: run the cell in this worker process; exceptions become its `error` result."""
    from tracefuse.jobs.cell import run_cell_safely

    return run_cell_safely(spec)


def import_ray():
    """The `ray` module, or a MissingDependencyError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("the Ray executor (--executor ray) needs the ray package",
                                     found=f"import ray failed: {exc}", fix=RAY_INSTALL) from exc
    return ray


class RayExecutor:
    """Cells as Ray tasks on the cluster at `address` (None: a new local instance; "auto": the running one).

    At most `jobs` cells are in flight at once; each one's time limit counts from its submission. When this
    executor started Ray itself it shuts it down after the run; a Ray that was already initialized (by the
    caller) is used as it is and left running.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.ray = import_ray()

    def _connect(self) -> bool:
        """Initialize Ray unless it is already; returns whether this call started it."""
        ray = self.ray
        if ray.is_initialized():
            return False
        kwargs = {"log_to_driver": False, **self.init_kwargs}
        if self.address is None:
            kwargs.setdefault("include_dashboard", False)
        try:  # "local" starts a new instance even where RAY_ADDRESS or a (stale) local cluster is recorded
            ray.init(address=self.address or "local", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise TracefuseError(f"cannot connect to the Ray cluster at {self.address or 'a new local instance'}",
                                 found=f"{type(exc).__name__}: {exc}",
                                 fix="check --address (e.g. ray://head:10001 or head:6379) and that the cluster "
                                     "is up (`ray status`); a cluster with token authentication also needs "
                                     "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token); "
                                     "or leave --address out for a local instance") from exc
        logger.info("ray: %s", ray.cluster_resources())
        return True

    def run(self, cells: Sequence[Cell], work_dir: Path, *, jobs: int = 1,
            on_done: OnDone | None = None) -> list[dict[str, Any]]:
        """Submit the cells as Ray tasks, `jobs` in flight at a time, cancelling each at its time limit."""
        started_ray = self._connect()
        try:
            return self._run(cells, max(1, jobs), on_done)
        finally:
            if started_ray:
                self.ray.shutdown()

    def _run(self, cells: Sequence[Cell], jobs: int, on_done: OnDone | None) -> list[dict[str, Any]]:
        ray = self.ray
        task = ray.remote(max_calls=1, max_retries=0, num_cpus=1)(_ray_cell)
        queue = list(enumerate(cells))
        pending: dict[Any, tuple[int, Cell, float]] = {}
        results: list[dict[str, Any] | None] = [None] * len(cells)

        def done(index: int, cell: Cell, result: dict[str, Any], start: float) -> None:
            results[index] = {**cell.to_spec(), **result, "wall_s": round(time.monotonic() - start, 3), "log": None}
            if on_done:
                on_done(results[index])

        while queue or pending:
            while queue and len(pending) < jobs:
                index, cell = queue.pop(0)
                ref = task.options(name=f"tracefuse-cell:{cell.id}").remote(cell.to_spec())
                pending[ref] = (index, cell, time.monotonic())
            deadline = min(start + cell.timeout_s for _, cell, start in pending.values())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for ref in ready:
                index, cell, start = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died (segfault, OOM kill) or the task failed
                    result = {"status": "error", "failures": [],
                              "message": f"the Ray task of this cell failed: {type(exc).__name__}: {exc}"[:4000]}
                done(index, cell, result, start)
            now = time.monotonic()
            for ref, (index, cell, start) in list(pending.items()):
                if now - start >= cell.timeout_s:
                    ray.cancel(ref, force=True)
                    del pending[ref]
                    done(index, cell, {"status": "timeout", "failures": [], "message":
                                       f"the cell ran past its time limit of {cell.timeout_s:g} s and its Ray task "
                                       "was cancelled"}, start)
        return [r for r in results if r is not None]


def make_executor(name: str = "local", *, address: str | None = None) -> Executor:
    """The executor called `name` ("local" or "ray"); `address` is the Ray cluster's and only valid with ray."""
    if name == "local":
        if address is not None:
            raise TracefuseError("--address is only used with --executor ray", found=f"--address {address}",
                                 fix="add --executor ray, or drop --address")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise TracefuseError(f"unknown executor '{name}'", fix=f"use one of: {', '.join(EXECUTORS)}")
