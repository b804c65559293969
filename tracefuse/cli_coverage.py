"""CLI command `tracefuse coverage`: every Transformers model type as tiny:<type>, exported and validated."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tracefuse.cli import _errors, err, out

logger = logging.getLogger(__name__)


def _exporter_order(text: str | None) -> tuple[str, ...]:
    """The --exporters order, checked."""
    from tracefuse.errors import TracefuseError
    from tracefuse.exporters.onnx_exporter import EXPORTERS
    from tracefuse.jobs.coverage_probe import EXPORTER_ORDER

    if not text:
        return EXPORTER_ORDER
    order = tuple(dict.fromkeys(e.strip() for e in text.split(",") if e.strip()))
    unknown = [e for e in order if e not in EXPORTERS]
    if unknown or not order:
        raise TracefuseError(f"unknown exporter(s) in --exporters: {', '.join(unknown) or '(none given)'}",
                             found=text, fix=f"list some of: {', '.join(EXPORTERS)}")
    return order


def coverage(
    format: Annotated[str, typer.Option("--format", help="Artifact format to export to (only onnx).")] = "onnx",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes run at once; each probes "
                                      "many model types in turn.")] = 2,
    types: Annotated[str | None, typer.Option("--types", help="Comma-separated model types to probe (default: "
                                              "every type in Transformers' auto mappings).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Probe only the first N model types "
                                              "(alphabetical).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="CPU seconds one model type may use (or 4x that "
                                           "in wall time) before its worker is killed and restarted.")] = 60.0,
    results: Annotated[Path | None, typer.Option("--results", help="JSONL file rows are appended to as they "
                                                 "finish; an existing one is resumed (default: next to --json, "
                                                 "else ./coverage.jsonl).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore the rows already in --results and probe every "
                                        "type again.")] = False,
    redo_failed: Annotated[bool, typer.Option("--redo-failed", help="Probe again the types whose row in --results "
                                              "is not validated (after a fix), keeping the validated ones.")] = False,
    report_only: Annotated[bool, typer.Option("--report-only", help="Probe nothing: write --json/--markdown from "
                                              "the rows already in --results (e.g. of an interrupted run).")] = False,
    exporters: Annotated[str | None, typer.Option("--exporters", help="Comma-separated ONNX exporters, tried in "
                                                  "turn until one validates (default: torchscript,dynamo,"
                                                  "transformers: the fast one first; dynamo,transformers,"
                                                  "torchscript for a table of the default exporter, about 3x "
                                                  "slower). With --report-only: the order the rows were "
                                                  "probed with, stated in the report.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the Markdown table here (e.g. "
                                                  "docs/coverage.md).")] = None,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Scratch directory for artifacts and "
                                                  "worker logs (default: a temporary directory).")] = None,
) -> None:
    """Export every model type of Transformers' auto mappings (tiny:<type>, its main task) to ONNX and validate
    it at two shapes against PyTorch; write a table of validated / failed with the reason per model type.

    Rows are appended to --results as they finish, so an interrupted run resumes. Exit 0 when the table
    was written (whatever the count), 2 for bad options.
    Example: tracefuse coverage --jobs 2 --json coverage.json --markdown docs/coverage.md
    """
    import tempfile

    from tracefuse.errors import TracefuseError
    from tracefuse.jobs.coverage import run_coverage, select_types
    from tracefuse.jobs.coverage_report import build_report, write_report

    with _errors():
        if format != "onnx":
            raise TracefuseError(f"coverage exports to onnx only, not '{format}'", fix="use --format onnx")
        pairs = select_types(types.split(",") if types else None, limit)
        order = _exporter_order(exporters)
        if results is None:
            results_path = json_path.with_suffix(".jsonl") if json_path else Path("coverage.jsonl")
        else:
            results_path = results
        work = Path(".") if report_only else (work_dir or Path(tempfile.mkdtemp(prefix="tracefuse-coverage-")))
        from tracefuse.jobs.coverage import read_rows

        prior = {} if fresh else read_rows(results_path)
        passed = [sum(prior.get(t, {}).get("status") == "validated" for t, _ in pairs)]  # resumed rows count too
        start = time.time()

        def on_row(row: dict[str, Any], n: int, total: int) -> None:
            passed[0] += row["status"] == "validated"
            mark = "[green]ok[/green]" if row["status"] == "validated" else f"[red]{row['status']}[/red]"
            why = "" if row["status"] == "validated" else f" {escape(str(row.get('reason'))[:110])}"
            err.print(f"[{n}/{total}] {mark} {escape(row['model_type'])} ({row.get('seconds', 0):.1f} s; "
                      f"{passed[0]} validated so far){why}", highlight=False)

        if report_only:
            if not results_path.is_file():
                raise TracefuseError("--report-only needs the rows of a run", found=f"no file {results_path}",
                                     fix="pass --results ROWS.jsonl of an earlier run")
            done = read_rows(results_path)
            rows, duration = [done[t] for t, _ in pairs if t in done], None
        else:
            rows = run_coverage(pairs, results_path, work, jobs=jobs, timeout_s=timeout, resume=not fresh,
                                redo_failed=redo_failed, exporters=order, on_row=on_row)
            duration = time.time() - start
        report = build_report(rows, duration_s=duration, jobs=jobs, planned=[t for t, _ in pairs],
                              exporters=None if report_only and exporters is None else order)
        write_report(report, json_path, markdown)
    s = report["summary"]
    out.print(f"{s['validated']} of {s['model_types']} model types validated at two shapes "
              f"({s['validated_with_automodel']} of {s['with_automodel']} with an AutoModel class); "
              f"{s['exported']} exported"
              + (f"; {len(report['not_probed'])} not probed yet" if report["not_probed"] else "")
              + f"; results in {results_path}")
    for c in report["failure_classes"][:8]:
        out.print(f"  {c['count']:4d}  {c['class']}")
    for path in (json_path, markdown):
        if path is not None:
            out.print(f"wrote {path}")
