"""The validation report: JSON is the source; the table is a view of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The short form kept in a manifest: pass/fail, runtime, cases, worst error per output."""
    # None where an output could not be measured (shape mismatch, non-finite mismatch, missing): the
    # manifest stays strict JSON, which has no Infinity.
    worst: dict[str, float | None] = {}
    for case in report["cases"]:
        for out in case["outputs"]:
            name, value = out["name"], out.get("max_abs")
            if value is None or (name in worst and worst[name] is None):
                worst[name] = None
            else:
                worst[name] = max(worst.get(name, 0.0), float(value))
    return {
        "passed": report["passed"], "runtime": report["runtime"], "reference": report["reference"],
        "cases": [c["name"] for c in report["cases"]], "max_abs": worst, "tolerance": report["tolerance"],
    }


def judge_by_cosine(report: dict[str, Any], min_cosine: float) -> None:
    """Re-judge a report (in place) by cosine similarity: each output passes when its cosine to the
    reference is at least `min_cosine`. Quantized graphs are judged this way, not elementwise."""
    for case in report["cases"]:
        for output in case["outputs"]:
            cos = output.get("cosine")
            output["passed"] = cos is not None and cos >= min_cosine
            output.pop("reason", None)
            if not output["passed"]:
                output["reason"] = f"cosine {cos} < {min_cosine}" if cos is not None else "no cosine was measured"
        case["passed"] = all(o["passed"] for o in case["outputs"])
    report["passed"] = bool(report["cases"]) and all(c["passed"] for c in report["cases"])
    report["criterion"] = f"cosine >= {min_cosine}"


def judge_by_top1(report: dict[str, Any], min_top1: float, min_cosine: float) -> None:
    """Re-judge a report (in place) by top-1 agreement: each logits output passes when the share of positions
    whose argmax matches the reference's is at least `min_top1`; any other output by cosine >= `min_cosine`."""
    for case in report["cases"]:
        for output in case["outputs"]:
            output.pop("reason", None)
            if output["name"].endswith("logits"):
                top1 = output.get("top1")
                output["passed"] = top1 is not None and top1 >= min_top1
                if not output["passed"]:
                    output["reason"] = f"top-1 {top1} < {min_top1}" if top1 is not None else "no top-1 was measured"
            else:
                cos = output.get("cosine")
                output["passed"] = cos is not None and cos >= min_cosine
                if not output["passed"]:
                    output["reason"] = f"cosine {cos} < {min_cosine}" if cos is not None else "no cosine was measured"
        case["passed"] = all(o["passed"] for o in case["outputs"])
    report["passed"] = bool(report["cases"]) and all(c["passed"] for c in report["cases"])
    report["criterion"] = f"top-1 >= {min_top1} (logits), cosine >= {min_cosine} (other outputs)"


def failures(report: dict[str, Any]) -> list[str]:
    """One line per failing output: 'case / output: reason'."""
    return [
        f"{case['name']} / {out['name']}: {out.get('reason', 'failed')}"
        for case in report["cases"] for out in case["outputs"] if not out["passed"]
    ]


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report atomically as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def render_table(report: dict[str, Any]):
    """A rich Table of every case and output with its metrics and verdict."""
    from rich.table import Table

    table = Table(title=f"validation: {report['runtime']} vs {report['reference']}  "
                        f"(atol {report['tolerance']['atol']:g}, rtol {report['tolerance']['rtol']:g})")
    for col in ("case", "output", "shape", "max abs", "max rel", "mean abs", "cosine", "top-1", "result"):
        table.add_column(col, justify="right" if col not in ("case", "output", "result") else "left")
    for case in report["cases"]:
        for out in case["outputs"]:
            def fmt(key: str, spec: str = ".2e", out: dict[str, Any] = out) -> str:
                return format(out[key], spec) if key in out else "-"

            table.add_row(
                case["name"], out["name"], "×".join(map(str, out["shape"])), fmt("max_abs"), fmt("max_rel"),
                fmt("mean_abs"), fmt("cosine", ".6f"), fmt("top1", ".3f"),
                "[green]pass[/green]" if out["passed"] else f"[red]FAIL[/red] {out.get('reason', '')}",
            )
    return table
