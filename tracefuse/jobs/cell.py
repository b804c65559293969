"""One matrix cell, run in its own process: export (cached), optional preset, validate on one runtime.

`python -m tracefuse.jobs.cell SPEC.json RESULT.json` reads a cell spec and writes its result; any
exception becomes the cell's "error" result, so the parent only sees crashes it cannot catch (a
segfault, the time limit), which it reports itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

PASSES_MODULE = "tracefuse.api_passes"


def _failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    tol = report["tolerance"]
    found = []
    for case in report["cases"]:
        for out in case["outputs"]:
            if out["passed"]:
                continue
            metric = "max_abs" if "max_abs" in out else ("shape" if "shape" in out.get("reason", "") else "output")
            found.append({
                "case": case["name"], "output": out["name"], "metric": metric, "value": out.get("max_abs"),
                "atol": tol["atol"], "rtol": tol["rtol"], "reason": out.get("reason", "failed"),
            })
    return found


def _metrics(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Worst value of each error metric per output over all cases (cosine: the lowest)."""
    worst: dict[str, dict[str, float]] = {}
    for case in report["cases"]:
        for out in case["outputs"]:
            w = worst.setdefault(out["name"], {})
            for key in ("max_abs", "max_rel", "mean_abs"):
                if key in out:
                    w[key] = max(w.get(key, 0.0), out[key])
            for key in ("cosine", "top1"):
                if key in out:
                    w[key] = min(w.get(key, 1.0), out[key])
    return worst


def _error_hist(report: dict[str, Any]) -> dict[str, dict[str, list]]:
    """Each output's error histogram summed over all cases."""
    hists: dict[str, dict[str, list]] = {}
    for case in report["cases"]:
        for out in case["outputs"]:
            h = out.get("error_hist")
            if not h:
                continue
            total = hists.setdefault(out["name"], {"edges": list(h["edges"]), "counts": [0] * len(h["counts"])})
            total["counts"] = [a + b for a, b in zip(total["counts"], h["counts"])]
    return hists


def _latency(report: dict[str, Any]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for case in report["cases"]:
        for name, ms in case.get("latency_ms", {}).items():
            if ms is not None:
                sums.setdefault(name, []).append(ms)
    return {name: sum(v) / len(v) for name, v in sums.items()}


def _apply_preset(cache, base: Path, spec: dict[str, Any], identity: dict[str, Any], versions) -> tuple[Path, bool]:
    import importlib

    from tracefuse.jobs.cache import cache_key

    try:
        passes = importlib.import_module(PASSES_MODULE)
    except ImportError as exc:
        raise TracefuseError(
            f"preset '{spec['preset']}' needs the optimization passes ({PASSES_MODULE}), which this tracefuse "
            "does not have", found=str(exc), fix='use presets = ["none"] until the passes land') from exc
    optimize = getattr(passes, "optimize", None)
    if optimize is None:
        raise TracefuseError(f"{PASSES_MODULE} has no optimize(artifact, out, preset=...) function")
    key = cache_key(identity, fmt=spec["format"], task=spec.get("task"), preset=spec["preset"],
                    options=spec["options"], versions=versions)
    return cache.get_or_build(key, lambda out: optimize(str(base), str(out), preset=spec["preset"]), cell=spec["id"])


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell described by `spec` (see matrix.Cell.to_spec); returns its result dict. Raises on errors."""
    from tracefuse import api
    from tracefuse.artifact import load_artifact
    from tracefuse.exporters.sources import load_source
    from tracefuse.jobs.cache import ExportCache, cache_key, source_identity

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    cache = ExportCache(spec["cache_dir"])
    loaded = load_source(spec["source"], spec.get("task"))
    identity = source_identity(loaded.source)
    versions = api.tool_versions()
    key = cache_key(identity, fmt=spec["format"], task=spec.get("task"), preset="none", options=spec["options"],
                    versions=versions)
    del loaded
    build = lambda out: api.export(spec["source"], out, format=spec["format"], task=spec.get("task"),  # noqa: E731
                                   options=dict(spec["options"]), validate=False, overwrite=True)
    path, hit = cache.get_or_build(key, build, cell=spec["id"])
    seconds["export"] = time.perf_counter() - start
    if spec["preset"] != "none":
        path, hit = _apply_preset(cache, path, spec, identity, versions)
        seconds["preset"] = time.perf_counter() - start - seconds["export"]
    t0 = time.perf_counter()
    # The recipe names the source, so the reference is the user's choice, not the manifest's.
    report = api.validate(path, reference=spec["source"], runtime=spec["runtime"],
                          tolerance=spec.get("tolerance") or None,
                          threads=spec.get("threads"))
    seconds["validate"] = time.perf_counter() - t0
    manifest = load_artifact(path, verify=False).manifest
    failures = _failures(report)
    return {
        "status": "pass" if report["passed"] else "fail",
        "message": None if report["passed"] else "; ".join(
            f"{f['output']} ({f['case']}): {f['metric']} — {f['reason']}" for f in failures),
        "failures": failures, "metrics": _metrics(report),
        "error_hist": _error_hist(report), "latency_ms": _latency(report),
        "size_bytes": sum(int(f.get("size", 0)) for f in manifest.files.values()),
        "passes": [dict(p) for p in manifest.passes], "cache": "hit" if hit else "miss", "cache_key": key,
        "artifact": str(path), "seconds": seconds, "report": report,
    }


def run_cell_safely(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in this process, which is the cell's own (a forked child, a fresh interpreter or a Ray
    worker): set its thread count, and turn any exception into the cell's `error` result instead of raising."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore")
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    try:
        return run_cell(spec)
    except TracefuseError as exc:
        return {"status": "error", "message": str(exc), "failures": []}
    except Exception as exc:  # noqa: BLE001 - a cell's crash is that cell's failure, reported with its trace
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "failures": [],
                "traceback": traceback.format_exc()[-4000:]}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the cell process: SPEC.json in, RESULT.json out; always exits 0 once the result is written."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    result = run_cell_safely(spec)
    tmp = Path(argv[1]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, argv[1])
    return 0


def entry(spec_path: str, result_path: str, log_path: str) -> None:
    """Target of a forked cell process: send stdout/stderr to the cell's log, then run `main`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os._exit(main([spec_path, result_path]))


if __name__ == "__main__":
    sys.exit(main())
