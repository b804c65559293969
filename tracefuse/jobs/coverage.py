"""`tracefuse coverage`: every model type of Transformers' auto mappings, as tiny:<type>, exported and validated.

Importing torch and transformers costs seconds, so each job is one long-lived worker process (forked from
the preloaded forkserver of jobs.matrix) that probes many model types in turn (jobs.coverage_probe). A
model type that runs past its time limit, or crashes the worker, is that type's row: the worker is killed
and a fresh one started. Rows are appended to a JSONL file as they finish, so an interrupted run keeps its
results and a second run with the same file resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
QUICK_RETRY_S = 10.0  # retried rows that failed faster than this run before new types, slower ones after
RECYCLE_AFTER = 100  # types per worker before a fresh one (bounds memory from imported model modules)


def main_task(model_type: str) -> str | None:
    """The task a model type is probed with: feature-extraction (AutoModel) when it has one, else the first
    task of tracefuse's table that Transformers has a class for; None when none."""
    from tracefuse.exporters import tasks

    for task in tasks.TASKS.values():
        if tasks.supports(task, model_type):
            return task.name
    return None


def all_model_types() -> list[str]:
    """Every model type in the auto mappings of tracefuse's tasks, sorted."""
    from tracefuse.exporters import tasks

    found: set[str] = set()
    for task in tasks.TASKS.values():
        found.update(tasks._mapping(task))
    return sorted(found)


def select_types(types: Iterable[str] | None, limit: int | None) -> list[tuple[str, str]]:
    """(model_type, task) pairs to probe: the given types (checked) or all of them, cut to `limit`."""
    known = all_model_types()
    if types:
        wanted = [t.strip() for t in types if t.strip()]
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise TracefuseError(
                f"unknown model type(s) for coverage: {', '.join(unknown)}",
                found=f"not among the {len(known)} model types of Transformers' auto mappings",
                fix="use Transformers model types such as bert, vit, gpt2 (see `tracefuse coverage --help`)")
    else:
        wanted = known
    pairs = [(t, main_task(t)) for t in wanted]
    pairs = [(t, task) for t, task in pairs if task]
    return pairs[:limit] if limit else pairs


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already in a JSONL results file, by model type (the last row of a type wins; torn lines skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "model_type" in row:
                rows[row["model_type"]] = row
    return rows


POLL_S = 1.0
WALL_FACTOR = 4  # a type is also stopped after this many times its limit in wall time (a hang uses no CPU)


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used, from /proc; None where there is no /proc."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """A long-lived probe process; `probe` sends it one model type and waits until it has used `timeout_s` of
    CPU time (so that a loaded, shared machine does not turn slow types into timeouts), or 4x that in wall time."""

    def __init__(self, index: int, work_dir: Path, threads: int) -> None:
        self.index, self.work_dir, self.threads = index, work_dir, threads
        self.log_path = work_dir / f"worker-{index}.log"
        self.proc = self.conn = None
        self.done = 0

    def _start(self) -> None:
        from tracefuse.jobs.coverage_probe import serve
        from tracefuse.jobs.matrix import _context

        ctx = _context()
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, self.threads, str(self.log_path),
                                                    str(self.work_dir / "artifacts")), daemon=True)
        self.proc.start()
        child.close()
        self.conn, self.done = parent, 0

    def stop(self) -> None:
        """End the worker: politely when idle, by kill otherwise."""
        if self.proc is None:
            return
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (OSError, EOFError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        self.proc = self.conn = None

    def probe(self, model_type: str, task: str, timeout_s: float,
              exporters: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The row of one model type; a timeout or crash kills the worker (the next call starts a new one)."""
        if self.proc is None or self.done >= RECYCLE_AFTER:
            self.stop()
            self._start()
        start = time.perf_counter()
        base = {"model_type": model_type, "task": task, "exported": False, "exporter": None}
        self.conn.send({"model_type": model_type, "task": task, **({"exporters": exporters} if exporters else {})})
        cpu0 = _cpu_seconds(self.proc.pid)
        ready, row, spent = False, None, 0.0
        try:
            while not ready:
                ready = self.conn.poll(POLL_S)
                spent = _cpu_seconds(self.proc.pid) - cpu0 if cpu0 is not None else time.perf_counter() - start
                if not ready and (spent > timeout_s or time.perf_counter() - start > WALL_FACTOR * timeout_s):
                    break
            row = self.conn.recv() if ready else None
        except (EOFError, OSError):
            ready, row = True, None
        wall = round(time.perf_counter() - start, 2)
        if row is not None:
            self.done += 1
            return {**row, "cpu_seconds": round(spent, 2)}
        if not ready:
            reason = (f"TimeoutError: no result within the {timeout_s:g} s limit per model type (CPU time "
                      f"{spent:.0f} s, wall {wall:.0f} s); the worker was killed")
            status = "timeout"
        else:
            self.proc.join(5)
            log = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
            tail = log.strip().splitlines()[-1:]
            reason = (f"WorkerCrash: the worker process died (exit code {self.proc.exitcode})"
                      + (f"; last output: {tail[0][:160]}" if tail else ""))
            status = "crashed"
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        self.proc = self.conn = None
        return {**base, "status": status, "stage": "unknown", "reason": reason, "seconds": wall}


def run_coverage(pairs: list[tuple[str, str]], results: Path, work_dir: Path, *, jobs: int = 2,
                 timeout_s: float = DEFAULT_TIMEOUT_S, resume: bool = True, redo_failed: bool = False,
                 exporters: tuple[str, ...] | None = None,
                 on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> list[dict[str, Any]]:
    """Probe every (model_type, task) with `jobs` workers, appending each row to the `results` JSONL as it
    finishes; rows already there are kept and not probed again when `resume` (except failed ones with
    `redo_failed`). `exporters` is the order they are tried in (coverage_probe.EXPORTER_ORDER by default).
    Returns the rows in order."""
    import os

    results.parent.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    done = read_rows(results) if resume else {}
    if not resume:
        results.write_text("")
    todo = [(t, task) for t, task in pairs if t not in done or done[t].get("task") != task
            or (redo_failed and done[t].get("status") != "validated")]

    def order(pair: tuple[str, str]) -> int:  # quick retries first, then new types, then slow retries
        previous = done.get(pair[0])
        if previous is None or previous.get("task") != pair[1]:
            return 1
        return 0 if float(previous.get("seconds") or 0.0) < QUICK_RETRY_S else 2

    todo.sort(key=order)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    lock = threading.Lock()
    queue = list(todo)
    finished = [len(pairs) - len(todo)]
    logger.info("coverage: %d model types, %d already in %s, %d jobs", len(pairs), finished[0], results, jobs)

    def loop(index: int) -> None:
        worker = Worker(index, work_dir, threads)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    model_type, task = queue.pop(0)
                row = worker.probe(model_type, task, timeout_s, exporters)
                with lock:
                    done[model_type] = row
                    with results.open("a") as fh:
                        fh.write(json.dumps(row, default=str) + "\n")
                    finished[0] += 1
                    if on_row:
                        on_row(row, finished[0], len(pairs))
        finally:
            worker.stop()

    threads_ = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(max(1, min(jobs, len(todo))))]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    return [done[t] for t, _ in pairs if t in done]
