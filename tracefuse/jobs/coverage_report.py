"""The coverage report: counts computed from the rows, failures grouped by reason class, JSON and Markdown."""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Any

from tracefuse import __version__

# (class, pattern on "stage | reason"), first match wins. A class is a kind of fix, not a model.
REASON_CLASSES: tuple[tuple[str, str], ...] = (
    ("timeout or crash", r"^(timeout|crashed) \|"),
    ("numerical mismatch", r"^mismatch \|"),
    ("config rejects the shrink", r"^failed config \|"),
    ("optional package missing", r"requires the .* librar|No module named|pip install|is not installed|"
     r"requires? (timm|natten|pillow|PIL|torchvision|detectron)"),
    ("mixture of experts: grouped_mm", r"grouped_mm"),
    ("mrope / rotary sections", r"mrope|rope_section|rotary"),
    ("inputs it cannot build", r"main input|required positional argument|must specify|You have to specify|"
     r"image tokens|grid_thw|bbox|visual_feats|should be provided|cannot generate inputs|are required|"
     r"Image features"),
    ("dynamo stride / view error", r"^failed export .*(stride|view size is not compatible)"),
    ("dynamic shape guards", r"^failed export .*(Constraints violated|specializ|guard|Dim\.|dynamic_shapes|"
     r"symbolic|SymInt|data-dependent|GuardOnDataDependent)"),
    ("op without ONNX conversion", r"^failed export .*(No ONNX function|Unsupported|not supported|unsupported)"),
    ("model or spec construction", r"^failed build \|"),
    ("forward error", r"^failed forward \|"),
    ("export error", r"^failed export \|"),
    ("validation error", r"^failed validate \|"),
)


def reason_class(row: dict[str, Any]) -> str | None:
    """The class of a row's failure (None for a validated row)."""
    if row.get("status") == "validated":
        return None
    text = f"{row.get('status')} {row.get('stage') or 'unknown'} | {row.get('reason') or ''}"
    if row.get("status") in ("timeout", "crashed", "mismatch"):
        text = f"{row['status']} | {row.get('reason') or ''}"
    for name, pattern in REASON_CLASSES:
        if re.search(pattern, text):
            return name
    return "other"


def build_report(rows: list[dict[str, Any]], *, duration_s: float | None = None, jobs: int | None = None,
                 planned: list[str] | None = None, exporters: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The coverage JSON: summary counts (from the rows), failure classes with counts, and the rows; the
    `planned` model types with no row yet (an interrupted run) are listed as not probed; `exporters` is the
    order the run tried them in (None when the report is made from rows alone)."""
    from transformers import __version__ as transformers_version
    from transformers.models.auto import modeling_auto

    with_automodel = set(modeling_auto.MODEL_MAPPING_NAMES)
    rows = [{**r, "reason_class": reason_class(r)} for r in rows]
    classes: dict[str, list[str]] = {}
    for r in rows:
        if r["reason_class"]:
            classes.setdefault(r["reason_class"], []).append(r["model_type"])
    validated = [r for r in rows if r["status"] == "validated"]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "kind": "tracefuse-coverage", "tracefuse_version": __version__, "transformers_version": transformers_version,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": None if duration_s is None else round(duration_s, 1), "jobs": jobs,
        "exporters": list(exporters) if exporters else None,
        "load_average": None if load is None else [round(x, 2) for x in load],
        "summary": {
            "model_types": len(rows),
            "exported": sum(bool(r.get("exported")) for r in rows),
            "validated": len(validated),
            "failed": len(rows) - len(validated),
            "with_automodel": sum(r["model_type"] in with_automodel for r in rows),
            "validated_with_automodel": sum(r["model_type"] in with_automodel for r in validated),
            "by_exporter": {e: sum(r.get("exporter") == e for r in validated)
                            for e in sorted({str(r.get("exporter")) for r in validated})},
            # CPU time the workers spent per type (rows that measured it): what an idle machine would need
            "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in rows), 1),
            "cpu_measured": sum("cpu_seconds" in r for r in rows),
            # types stopped by the limit or a crash measured no CPU time: the wall time they held a worker
            "unmeasured_seconds": round(sum(r.get("seconds") or 0.0 for r in rows if "cpu_seconds" not in r), 1),
        },
        "not_probed": [t for t in planned or [] if t not in {r["model_type"] for r in rows}],
        "failure_classes": sorted(({"class": k, "count": len(v), "model_types": v} for k, v in classes.items()),
                                  key=lambda c: (-c["count"], c["class"])),
        "rows": rows,
    }


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    """The Markdown view: the count at the top, failure classes with counts, then one row per model type."""
    s = report["summary"]
    lines = [
        "# Coverage: every Transformers model type as `tiny:<type>`", "",
        f"**{s['validated']} of {s['model_types']} model types export to ONNX and validate at fp32 at two shapes** "
        f"({s['validated_with_automodel']} of the {s['with_automodel']} with an `AutoModel` class); "
        f"{s['exported']} exported. By exporter: "
        + ", ".join(f"{k} {v}" for k, v in s["by_exporter"].items()) + ".", "",
        f"transformers {report['transformers_version']}, tracefuse {report['tracefuse_version']}, "
        f"created {report['created']}"
        + (f", {report['duration_s'] / 60:.1f} min with --jobs {report['jobs']}" if report.get("duration_s") else "")
        + (f", load average {' '.join(str(x) for x in report['load_average'])}" if report.get("load_average") else "")
        + ". Regenerate with `tracefuse coverage --jobs 2 --json coverage.json --markdown docs/coverage.md`.", "",
        "Each model type is built from its default config shrunk by `tiny:` (seeded random weights), for its main "
        "task (feature-extraction when it has an `AutoModel` class), exported "
        + (f"with the exporters {' → '.join(report['exporters'])} in turn until one validates"
           if report.get("exporters") else "with the exporters of the run's --exporters in turn")
        + " (dynamo with fixed axes is added where dynamo's graph holds its trace shape, and the same exporters "
        "with no KV cache, for feature-extraction, where a decoder fails with its cache), and compared with PyTorch "
        "on ONNX Runtime CPU at the two validation shapes of its ArchSpec. The exporter column names the one that "
        "validated: `tracefuse export tiny:TYPE --exporter NAME` exports the same way (`dynamo, fixed axes` is "
        "`--exporter dynamo --fixed-axes '*'`, `dynamo, fixed batch` is `--exporter dynamo --fixed-axes batch`: the "
        "axes torch.export named as static, the others dynamic and validated at two sizes; `dynamo, no cache` is "
        "`--exporter dynamo --no-cache`, `torchscript, no cache` is `--exporter torchscript --no-cache`). "
        + ("A row validated by an earlier exporter in that order says nothing about the later ones (the JSON lists, "
           "under `tried`, the reasons of those that were tried and failed). "
           if report.get("exporters") and report["exporters"][0] != "dynamo" else "")
        + "A reason is the first line of the exception that stopped it (dynamo's when every exporter failed). A "
        "type is stopped after `--timeout` CPU seconds (or 4x that in wall time).", "",
    ]
    if s.get("cpu_measured") and report.get("jobs"):
        total = s["model_types"] + len(report.get("not_probed") or [])
        mean = s["cpu_seconds"] / s["cpu_measured"]
        unmeasured = s.get("unmeasured_seconds", 0.0)
        others = s["model_types"] - s["cpu_measured"]
        spent = s["cpu_seconds"] + unmeasured + mean * len(report.get("not_probed") or [])
        lines += [f"The workers used {s['cpu_seconds']:.0f} CPU seconds for the {s['cpu_measured']} types that "
                  f"measured it ({mean:.1f} s per type), and the {others} stopped by the limit or a crash held a "
                  f"worker {unmeasured:.0f} s more: a run of all {total} types on an idle machine with "
                  f"--jobs {report['jobs']} would take about {spent / report['jobs'] / 60:.0f} min "
                  "(a projection from those times; the wall time above is what this shared machine gave).", ""]
    if report.get("not_probed"):
        lines += [f"**Incomplete run: {len(report['not_probed'])} more model types were not probed yet**: "
                  + ", ".join(report["not_probed"]) + ".", ""]
    lines += [
        "## Failures by class", "", "| class | count | model types |", "|---|---:|---|",
    ]
    for c in report["failure_classes"]:
        lines.append(f"| {_cell(c['class'])} | {c['count']} | {_cell(', '.join(c['model_types']))} |")
    lines += ["", "## Every model type", "", "| model type | task | result | exporter | stage | reason |",
              "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        result = {"validated": "validated", "mismatch": "exported, mismatch"}.get(r["status"], r["status"])
        lines.append(f"| {_cell(r['model_type'])} | {_cell(r['task'])} | {result} | {_cell(r.get('exporter') or '-')} "
                     f"| {_cell(r.get('stage') if r['status'] != 'validated' else '')} | {_cell(r.get('reason'))} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], json_path: Path | None, md_path: Path | None) -> None:
    """Write the JSON and/or Markdown views (each atomically)."""
    for path, text in ((json_path, lambda: json.dumps(report, indent=1, default=str)),
                       (md_path, lambda: to_markdown(report))):
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text())
            os.replace(tmp, path)
