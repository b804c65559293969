"""One coverage probe: build `tiny:<model_type>`, export it to ONNX, validate it at the spec's two shapes.

Runs inside a long-lived coverage worker (see coverage.py), one model type after another. Every failure is
kept with the message of the exception that caused it (the innermost one, first line, trimmed) and the
stage it happened in, so the coverage table quotes the exporter or validator, never a placeholder.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REASON_CHARS = 240
# Exporters tried in turn when the previous one fails at the export stage: torch.onnx dynamo (the default),
# transformers' own exporter (its op patches, FX fixes and ONNX translations: grouped_mm, views of
# non-contiguous tensors, vmap masks; plain graphs only), then the TorchScript-based exporter.
FALLBACKS = ("dynamo", "transformers", "torchscript")
# torch.export found an axis it must keep static (the model specializes it): dynamo is tried again with every
# axis but batch fixed at its trace size (archspec.fix_axes); the row's exporter says so.
_SPECIALIZED = ("conflicts between user-specified ranges and inferred ranges", "Constraints violated")
FIXED = "dynamo, fixed axes"
_RUN_FAILED = "Non-zero status code returned while running"  # ONNX Runtime ran the graph and a node failed
# progress messages of api.export -> the stage they start
_STAGES = (("loading", "build"), ("probing", "forward"), ("exporting", "export"), ("validating", "validate"))
# wrapper errors whose own first line says less than their cause
_GENERIC = ("Failed to export the model with torch.export", "the dynamo exporter failed",
            "the torchscript exporter failed", "could not build tiny:")


def first_line(text: str) -> str:
    """The first non-empty line of `text`, whitespace-collapsed and cut to REASON_CHARS characters."""
    for line in str(text).splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"
    return ""


def reason_of(exc: BaseException) -> str:
    """`Type: first line` of the most telling exception in the chain: the innermost one, unless it says nothing."""
    chain: list[BaseException] = []
    seen = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    for item in reversed(chain):
        line = first_line(str(item))
        if line and not line.startswith(_GENERIC):
            return f"{type(item).__name__}: {line}"
    return f"{type(exc).__name__}: {first_line(str(exc)) or '(no message)'}"


def _mismatch_reason(report: dict[str, Any]) -> str:
    for case in report.get("cases", []):
        for out in case.get("outputs", []):
            if not out.get("passed", True):
                return first_line(f"{out['name']} at {case['name']}: {out.get('reason', 'failed')}")
    return "validation failed"


def _specialized_graph(report: dict[str, Any]) -> bool:
    """The graph matches PyTorch at the first validation shape and not at a later one: it holds the trace
    shape's branch (a position table interpolated to the trace size, a window clamped), so dynamo with fixed
    axes is tried."""
    cases = report.get("cases", [])
    return len(cases) > 1 and bool(cases[0].get("passed")) and not all(c.get("passed") for c in cases[1:])


def _worst(report: dict[str, Any]) -> float | None:
    values = [o["max_abs"] for c in report.get("cases", []) for o in c.get("outputs", []) if "max_abs" in o]
    return max(values) if values else None


def _export(model_type: str, task: str, out: Path, exporter: str, stage: list[str],
            timings: dict[str, float]) -> dict[str, Any]:
    fixed = ("*",) if exporter == FIXED else ()
    exporter = "dynamo" if exporter == FIXED else exporter
    from tracefuse import api

    mark = [time.perf_counter()]

    def progress(message: str) -> None:
        for prefix, name in _STAGES:
            if message.startswith(prefix):
                now = time.perf_counter()
                timings[stage[0]] = round(timings.get(stage[0], 0.0) + now - mark[0], 2)
                stage[0], mark[0] = name, now

    try:
        result = api.export(f"tiny:{model_type}", out, format="onnx", task=task, exporter=exporter, validate=True,
                            overwrite=True, progress=progress, fixed_axes=fixed)
    finally:
        timings[stage[0]] = round(timings.get(stage[0], 0.0) + time.perf_counter() - mark[0], 2)
    return result.report or {}


def probe(model_type: str, task: str, work_dir: Path, *, fallback: bool = True) -> dict[str, Any]:
    """Export and validate one model type; returns its coverage row (never raises for a model's failure).

    Status: `validated` (ONNX Runtime matches PyTorch at both shapes), `mismatch` (exported, but outputs
    differ), `failed` (an error at `stage`: config, build, forward, export or validate). When the dynamo
    exporter fails, the FALLBACKS are tried in turn (`fallback`), first dynamo with fixed axes when torch.export
    says the model specializes one. Dynamo with fixed axes is also tried, instead, when the graph exported but
    holds its trace shape: ONNX Runtime fails running it, or it matches PyTorch at the first validation shape
    only. The row names the exporter that worked.
    """
    from tracefuse.exporters.tiny import tiny_config

    start = time.perf_counter()
    row: dict[str, Any] = {"model_type": model_type, "task": task, "status": "failed", "exported": False,
                           "exporter": None, "stage": "config", "reason": None, "stage_seconds": {}}
    out = work_dir / f"{model_type}-{os.getpid()}"
    try:
        tiny_config(model_type)
    except Exception as exc:  # noqa: BLE001 - the config's own validation rejected the shrink
        row.update(reason=reason_of(exc), seconds=round(time.perf_counter() - start, 2))
        return row
    attempts = list(FALLBACKS if fallback else FALLBACKS[:1])
    for exporter in attempts:
        stage = ["build"]
        try:
            report = _export(model_type, task, out, exporter, stage, row["stage_seconds"])
        except Exception as exc:  # noqa: BLE001 - any failure is this model's row
            if exporter == "dynamo":
                row.update(stage=stage[0], reason=reason_of(exc), traceback=traceback.format_exc()[-3000:])
                if fallback and any(text in row["reason"] + row["traceback"] for text in _SPECIALIZED):
                    attempts.insert(1, FIXED)
                elif fallback and stage[0] == "validate" and _RUN_FAILED in row["reason"]:
                    # exported and loaded, but ONNX Runtime fails running it (at another shape than the trace's)
                    attempts[1:] = [FIXED]
                    continue
            else:  # the row keeps dynamo's reason (the default exporter), the others' are listed
                row.setdefault("fallback_reasons", {})[exporter] = reason_of(exc)
            if stage[0] != "export":
                break  # the model itself fails before export: another exporter would not help
            continue
        else:
            passed = bool(report.get("passed"))
            if not passed and exporter == FIXED and row["status"] == "mismatch":
                break  # fixed axes did not help either: the row keeps the dynamic export's mismatch
            row.update(exported=True, exporter=exporter, stage="validate", max_abs=_worst(report),
                       cases=[c["name"] for c in report.get("cases", [])],
                       status="validated" if passed else "mismatch",
                       reason=None if passed else _mismatch_reason(report))
            if passed:
                row.pop("traceback", None)
            elif fallback and exporter == "dynamo" and _specialized_graph(report):
                attempts[1:] = [FIXED]
                continue
            break
        finally:
            shutil.rmtree(out, ignore_errors=True)
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def serve(conn: Any, threads: int, log_path: str, work_dir: str) -> None:
    """Worker loop: receive {"model_type", "task"} on `conn`, send back the row; None ends the loop.

    Its stdout/stderr go to `log_path` (exporters print), torch uses `threads` threads.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(max(1, threads))
    import transformers  # noqa: F401 - once per worker, not per model type

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    while True:
        item = conn.recv()
        if item is None:
            break
        print(f"--- {item['model_type']} ({item['task']})", flush=True)
        conn.send(probe(item["model_type"], item["task"], work, fallback=item.get("fallback", True)))
    conn.close()
