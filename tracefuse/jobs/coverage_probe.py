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

from tracefuse.errors import SpecializedAxesError

logger = logging.getLogger(__name__)

REASON_CHARS = 240
# Exporters tried in turn until one validates. The TorchScript-based exporter goes first because it is the
# fast one (a tiny model exports in about a second; torch.onnx dynamo takes 5 to 40 s, most of it torch.export's
# symbolic tracing and decomposition), so a full run fits in the time a CI job has. Then torch.onnx dynamo (the
# default of `tracefuse export`), then transformers' own exporter (its op patches, FX fixes and ONNX
# translations: grouped_mm, views of non-contiguous tensors, vmap masks; plain graphs only).
EXPORTER_ORDER = ("torchscript", "dynamo", "transformers")
# torch.export found an axis it must keep static (the model specializes it): dynamo is tried again with the
# axes it named fixed at their trace size (`dynamo, fixed batch`), or where it named none (and where the dynamic
# graph holds its trace shape), every axis but batch (`dynamo, fixed axes`); archspec.fix_axes. The row's
# exporter says which.
_SPECIALIZED = ("conflicts between user-specified ranges and inferred ranges", "Constraints violated")
FIXED = "dynamo, fixed axes"
_FIXED_PREFIX = "dynamo, fixed "
# A decoder's feature-extraction graph is exported with its KV cache. Where every exporter fails with it (the
# model's own code cannot run a multi-token step after a cached one: sparse-attention indexers), dynamo is
# tried once more exporting the plain graph, as `tracefuse export --no-cache` does; the row's exporter says so.
NO_CACHE = "dynamo, no cache"
TS_NO_CACHE = "torchscript, no cache"  # the fast exporter first, as in EXPORTER_ORDER
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


def fixed_label(axes: Any) -> str:
    """The exporter label of a dynamo export with `axes` fixed (None or "*": every axis but batch)."""
    return FIXED if not axes or list(axes) == ["*"] else _FIXED_PREFIX + ",".join(axes)


def fixed_axes_of(label: str) -> tuple[str, ...]:
    """The axes a label fixes: () for a plain exporter, ("*",) for FIXED."""
    if label == FIXED:
        return ("*",)
    return tuple(label[len(_FIXED_PREFIX):].split(",")) if label.startswith(_FIXED_PREFIX) else ()


def _export(model_type: str, task: str, out: Path, exporter: str, stage: list[str],
            timings: dict[str, float]) -> dict[str, Any]:
    fixed = fixed_axes_of(exporter)
    use_cache = exporter not in (NO_CACHE, TS_NO_CACHE)
    exporter = "dynamo" if fixed or exporter == NO_CACHE else "torchscript" if exporter == TS_NO_CACHE else exporter
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
                            overwrite=True, progress=progress, fixed_axes=fixed, use_cache=use_cache)
    finally:
        timings[stage[0]] = round(timings.get(stage[0], 0.0) + time.perf_counter() - mark[0], 2)
    return result.report or {}


def _attempt(model_type: str, task: str, out: Path, exporter: str, timings: dict[str, float]) -> dict[str, Any]:
    """One exporter's try: the fields of a row (status, stage, reason, and when it exported, the cases)."""
    stage = ["build"]
    try:
        report = _export(model_type, task, out, exporter, stage, timings)
    except Exception as exc:  # noqa: BLE001 - any failure is this model's row
        failed = {"exporter": exporter, "status": "failed", "exported": False, "stage": stage[0],
                  "reason": reason_of(exc), "traceback": traceback.format_exc()[-3000:]}
        if isinstance(exc, SpecializedAxesError):
            failed["static_axes"] = list(exc.axes)
        return failed
    finally:
        shutil.rmtree(out, ignore_errors=True)
    passed = bool(report.get("passed"))
    shapes = {c["name"] for c in report.get("cases", [])}
    if passed and len(shapes) < 2:  # fixing axes left a single shape: dynamic axes not proven
        return {"exporter": exporter, "status": "failed", "exported": True, "stage": "validate",
                "reason": f"validated at one shape only ({', '.join(sorted(shapes)) or 'none'}): with these axes "
                "fixed no dynamic axis is left to validate at a second shape"}
    return {"exporter": exporter, "status": "validated" if passed else "mismatch", "exported": True,
            "stage": "validate", "max_abs": _worst(report), "cases": [c["name"] for c in report.get("cases", [])],
            "reason": None if passed else _mismatch_reason(report), "specialized": _specialized_graph(report)}


def _next_attempts(outcome: dict[str, Any], rest: list[str]) -> list[str] | None:
    """The exporters still to try after `outcome`, or None to stop (validated, or failed before any exporter
    ran: the model itself fails). Dynamo with fixed axes replaces the rest when the dynamic graph holds its
    trace shape, and goes first when torch.export says the model specializes an axis."""
    status, exporter = outcome["status"], outcome["exporter"]
    if status == "validated" or outcome["stage"] in ("config", "build", "forward"):
        return None
    reason = (outcome.get("reason") or "") + outcome.get("traceback", "")
    if status == "failed" and outcome["stage"] == "validate" and _RUN_FAILED not in reason and exporter == "dynamo":
        return None  # the reference or the inputs fail at a validation shape: another exporter would not help
    if fixed_axes_of(exporter):
        more = set(outcome.get("static_axes") or ()) - set(fixed_axes_of(exporter))
        if more and FIXED != exporter:  # torch.export named further static axes: fix those too, once each
            return [fixed_label([*fixed_axes_of(exporter), *sorted(more)]), *rest]
        return None if status == "mismatch" else rest
    if exporter == "dynamo":
        if status == "failed" and any(text in reason for text in _SPECIALIZED):
            return [fixed_label(outcome.get("static_axes")), *rest]
        if (status == "failed" and _RUN_FAILED in reason) or (status == "mismatch" and outcome["specialized"]):
            return [FIXED]
    return rest


def _cache_retry(model_type: str, task: str, outcomes: list[dict[str, Any]]) -> bool:
    """Whether to try NO_CACHE: nothing validated, every exporter got past the model's own forward, the task
    is feature-extraction (a text-generation graph is its cache) and the spec has past key/values."""
    if task != "feature-extraction" or any(o["status"] == "validated" or o["stage"] in ("config", "build", "forward")
                                           for o in outcomes):
        return False
    from tracefuse.exporters.archspec import resolve_spec
    from tracefuse.exporters.sources import load_source

    try:
        spec = resolve_spec(load_source(f"tiny:{model_type}", task))
    except Exception:  # noqa: BLE001 - no spec, no cache to drop
        return False
    return any(name.startswith("past_key_values") for name in spec.input_names)


def _row_outcome(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The outcome a row reports: the one that validated; else an exported mismatch (dynamo's first); else the
    default exporter's (dynamo's) failure, or the first one when dynamo was not reached."""
    for status in ("validated", "mismatch", "failed"):
        found = [o for o in outcomes if o["status"] == status]
        if found:
            return next((o for o in found if o["exporter"] == "dynamo"), found[0]) if status != "validated" \
                else found[-1]
    raise ValueError("no outcome")


def probe(model_type: str, task: str, work_dir: Path, *, exporters: tuple[str, ...] | list[str] = EXPORTER_ORDER,
          ) -> dict[str, Any]:
    """Export and validate one model type; returns its coverage row (never raises for a model's failure).

    Status: `validated` (ONNX Runtime matches PyTorch at both shapes), `mismatch` (exported, but outputs
    differ), `failed` (an error at `stage`: config, build, forward, export or validate). The `exporters` are
    tried in turn until one validates (see _next_attempts; dynamo with fixed axes is added where dynamo's
    graph holds its trace shape, and torchscript then dynamo with no cache where a decoder fails with it). The
    row names the exporter that worked, and `tried` the others' reasons.
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
    outcomes: list[dict[str, Any]] = []
    queue: list[str] | None = list(exporters)
    while queue:
        outcomes.append(_attempt(model_type, task, out, queue[0], row["stage_seconds"]))
        queue = _next_attempts(outcomes[-1], queue[1:])
    if _cache_retry(model_type, task, outcomes):  # the plain graph, by the run's exporters in their order
        for label in [{"torchscript": TS_NO_CACHE, "dynamo": NO_CACHE}[e] for e in exporters
                      if e in ("torchscript", "dynamo")]:
            outcomes.append(_attempt(model_type, task, out, label, row["stage_seconds"]))
            if outcomes[-1]["status"] == "validated":
                break
    chosen = _row_outcome(outcomes)
    row.update({k: v for k, v in chosen.items() if k not in ("specialized", "static_axes")})
    if not chosen["exported"]:
        row["exporter"] = None
    if chosen["status"] == "validated":
        row.pop("traceback", None)
    others = {o["exporter"]: o["reason"] or o["status"] for o in outcomes if o is not chosen}
    if others:
        row["tried"] = others
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
        conn.send(probe(item["model_type"], item["task"], work, exporters=item.get("exporters", EXPORTER_ORDER)))
    conn.close()
