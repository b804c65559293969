"""`tracefuse debug`: find the first PyTorch module whose exported output diverges (see tracefuse.api_debug)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tracefuse.cli import ThreadsOpt, _errors, _progress, err, out
from tracefuse.errors import TracefuseError


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _print_modules(report: dict[str, Any], depth: int) -> None:
    from rich.table import Table

    first = report["first_divergent"]
    table = Table(title=f"modules in execution order ({report['case']}; atol {report['tolerance']['atol']:g}, "
                        f"rtol {report['tolerance']['rtol']:g})")
    for col in ("module", "max abs err", "max rel err", "cosine", "result"):
        table.add_column(col, justify="left" if col in ("module", "result") else "right")
    hidden = 0
    for e in report["modules"]:
        if depth and e["module"].count(".") + 1 > depth and e is not first:
            hidden += 1
            continue
        if "skipped" in e:
            table.add_row(escape(e["module"]), "-", "-", "-", f"[dim]skipped: {escape(e['skipped'])}[/dim]")
            continue
        verdict = "ok" if e["passed"] else "[bold red]FIRST DIVERGENCE[/bold red]" if e is first else "[red]over[/red]"
        table.add_row(escape(e["module"]), _fmt(e.get("max_abs")), _fmt(e.get("max_rel")),
                      f"{e['cosine']:.6f}" if "cosine" in e else "-", verdict)
    out.print(table)
    if hidden:
        out.print(f"({hidden} deeper modules not shown; --depth 0 shows all)")


def _print_bisect(result: dict[str, Any]) -> None:
    for note in result["notes"]:
        err.print(f"[yellow]note:[/yellow] {escape(note)}")
    for step in result["steps"]:
        check = step.get("check", {})
        status = "ok" if check.get("passed") else "[red]FAIL[/red]"
        out.print(f"pass {escape(step['name'])}: {status} (max abs vs unoptimized {_fmt(check.get('max_abs'))})")
    if result["failed_pass"]:
        err.print(f"[bold red]first pass past tolerance:[/bold red] {escape(result['failed_pass'])}")
    else:
        out.print("[green]every pass keeps the outputs within tolerance[/green]")


def debug(
    artifact: Annotated[Path, typer.Argument(help="The ONNX artifact directory to examine (it is not modified).")],
    reference: Annotated[str | None, typer.Option("--reference", help="The model to compare against (default: "
                                                  "the source the manifest records).")] = None,
    inputs: Annotated[Path | None, typer.Option("--inputs", help="An .npz of named input arrays (default: "
                                                "generated at the manifest's first validation shape).")] = None,
    atol: Annotated[float | None, typer.Option("--atol", min=0.0, help="Absolute tolerance (default: the "
                                               "manifest's).")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", min=0.0, help="Relative tolerance (default: the "
                                               "manifest's).")] = None,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Modules compared per ONNX Runtime session and "
                                       "reference run; lower it to bound memory on large models.")] = 32,
    depth: Annotated[int, typer.Option("--depth", min=0, help="Show modules up to this many name components "
                                       "deep (e.g. 3: encoder.layer.1); the first divergent one is always "
                                       "shown; 0 shows all.")] = 0,
    bisect: Annotated[bool, typer.Option("--bisect-passes", help="Also re-run the passes the manifest records "
                                         "with a check after each, and name the first that breaks tolerance.")]
    = False,
    base: Annotated[Path | None, typer.Option("--base", help="With --bisect-passes: the artifact `tracefuse "
                                              "optimize` read (default: export the reference again).")] = None,
    threads: ThreadsOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the per-module results (and the pass "
                                                   "bisection) as JSON here.")] = None,
) -> None:
    """Compare every PyTorch module's output with the ONNX value it was exported to; name the first module
    whose error exceeds the tolerance, and how the error grows in the modules that enclose it.

    Exit code 1 when a module (or, with --bisect-passes, a pass) diverges, 0 when all are within tolerance.

    Example: tracefuse debug out/bert --json debug.json
    """
    from tracefuse import api_debug
    from tracefuse.validation.report import write_json

    with _errors():
        if base is not None and not bisect:
            raise TracefuseError("--base is only read by --bisect-passes", fix="add --bisect-passes, or drop --base")
        tolerance = {k: v for k, v in {"atol": atol, "rtol": rtol}.items() if v is not None}
        with _progress() as progress:
            bisected = None
            if bisect:
                bisected = api_debug.bisect_passes(artifact, base, reference=reference, inputs=inputs,
                                                   tolerance=tolerance, threads=threads, progress=progress)
            report = api_debug.debug(artifact, reference=reference, inputs=inputs, tolerance=tolerance,
                                     chunk=chunk, threads=threads, progress=progress)
        if bisected is not None:
            report["bisect_passes"] = bisected
        _print_modules(report, depth)
        if json_path is not None:
            write_json(report, json_path)
            out.print(f"report written to {escape(str(json_path))}")
        if bisected is not None:
            _print_bisect(bisected)
        first = report["first_divergent"]
        if first is not None:
            err.print(f"[bold red]first divergent module:[/bold red] {escape(first['module'])} "
                      f"(value {escape(first['value'])}): {escape(first.get('reason', ''))}", highlight=False)
            growth = " → ".join(f"{p['module']} {_fmt(p['max_abs'])}" for p in report["path"])
            err.print(f"error growth (max abs): {escape(growth)}", highlight=False)
        else:
            out.print(f"[bold green]all {report['compared']} modules within tolerance[/bold green]")
        if first is not None or (bisected is not None and bisected["failed_pass"]):
            raise typer.Exit(1)
