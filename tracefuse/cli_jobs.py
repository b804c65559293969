"""CLI commands for CI jobs: `tracefuse ci` (the recipe matrix) and `tracefuse debug` (the divergence finder)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from tracefuse.cli import _errors, err, out

logger = logging.getLogger(__name__)

_ICON = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]", "error": "[red]ERROR[/red]",
         "timeout": "[red]TIMEOUT[/red]"}


def _cell_done(result: dict[str, Any]) -> None:
    err.print(f"{_ICON.get(result['status'], result['status'])} {result['id']} "
              f"({result.get('wall_s', 0):.1f} s{', cached' if result.get('cache') == 'hit' else ''})",
              highlight=False)


def _summary_table(report: dict[str, Any]):
    from rich.table import Table

    from tracefuse.validation.reports_junit import failure_message

    table = Table(title=f"tracefuse ci: {report['summary']['cells']} cells")
    for col in ("cell", "result", "max abs", "latency ms", "cache", "why"):
        table.add_column(col)
    for c in report["cells"]:
        worst = max((m.get("max_abs", 0.0) for m in (c.get("metrics") or {}).values()), default=None)
        lat = (c.get("latency_ms") or {}).get(c["runtime"])
        table.add_row(c["id"], _ICON.get(c["status"], c["status"]), "-" if worst is None else f"{worst:.2e}",
                      "-" if lat is None else f"{lat:.3f}", c.get("cache", "-"),
                      "" if c["status"] == "pass" else failure_message(c))
    return table


def ci(
    recipe: Annotated[Path | None, typer.Option("--recipe", help="The recipe file (default ./tracefuse.toml).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Cells run at once (default: the "
                                             "recipe's ci.jobs, else 1).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report (the source of "
                                                   "truth) here.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Where cells run: 'local' (processes on this "
                                          "machine) or 'ray' (Ray tasks; needs pip install 'tracefuse\\[ray]').")
                        ] = "local",
    address: Annotated[str | None, typer.Option("--address", help="With --executor ray: the cluster to use "
                                                "(e.g. ray://head:10001, or auto for the cluster `ray start` runs "
                                                "here); default: a new local Ray instance.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="The export cache (default: the recipe's "
                                                   "ci.cache_dir). With --executor ray on a cluster it must be on "
                                                   "storage every worker sees at the same path.")] = None,
) -> None:
    """Run every cell of a recipe (models × formats × presets × runtimes), each in its own process.

    Exports are cached by model weights/config, tracefuse and tool versions and options, so unchanged
    cells are not re-exported. Exit 0 when every cell passes, 1 when one fails, 2 for a bad recipe.
    Example: tracefuse ci --recipe tracefuse.toml --jobs 2 --junit ci.xml --html ci.html
    On a Ray cluster: tracefuse ci --executor ray --address ray://head:10001 --cache-dir /shared/tf-cache
    """
    from tracefuse.jobs.executors import make_executor
    from tracefuse.jobs.matrix import run_recipe
    from tracefuse.jobs.recipe import load_recipe
    from tracefuse.validation.report import write_json
    from tracefuse.validation.reports_html import write_html
    from tracefuse.validation.reports_junit import write_junit

    with _errors():
        parsed = load_recipe(recipe)
        if cache_dir is not None:
            parsed = dataclasses.replace(parsed, cache_dir=cache_dir)
        runner = make_executor(executor, address=address)
        report = run_recipe(parsed, jobs=jobs, on_done=_cell_done, executor=runner)
    out.print(_summary_table(report))
    for path, writer in ((json_path, write_json), (junit, write_junit), (html, write_html)):
        if path is not None:
            writer(report, path)
            out.print(f"wrote {path}")
    s = report["summary"]
    out.print(f"{s['pass']} passed, {s['fail']} failed, {s['error'] + s['timeout']} errors, {s['skipped']} skipped; "
              f"{report['cache']['exports']} exports, {report['cache']['hits']} cache hits")
    if not report["passed"]:
        raise typer.Exit(1)
