"""pytest plugin: `pytest --tracefuse-recipe FILE` makes every cell of a CI recipe a pytest item.

Registered through the `pytest11` entry point, so it is loaded by every pytest run in an environment that
has tracefuse installed; it therefore imports nothing heavy until `--tracefuse-recipe` is given. Each item
runs its cell through the same code as `tracefuse ci` with the local executor (its own process, its time
limit, the recipe's export cache) and fails with the metric that failed. Combinations the recipe lists but
no runtime can run are skipped items with the reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OPTION = "--tracefuse-recipe"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --tracefuse-recipe (repeatable)."""
    group = parser.getgroup("tracefuse", "tracefuse CI recipes")
    group.addoption(OPTION, action="append", default=[], metavar="FILE", dest="tracefuse_recipes",
                    help="Collect every cell of this tracefuse CI recipe (see docs/ci.md) as a test item; "
                         "each runs like a `tracefuse ci` cell. May be given more than once.")


class CellFailed(Exception):
    """A cell did not pass; carries its result dict for `repr_failure`."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("message") or result["status"])
        self.result = result


class RecipeFile(pytest.File):
    """The recipe file as a collector: one CellItem per cell, one SkippedCellItem per left-out combination."""

    def collect(self) -> Iterator[pytest.Item]:
        """Expand the recipe with the same code as `tracefuse ci`."""
        from tracefuse.jobs.matrix import expand
        from tracefuse.jobs.recipe import key_line, load_recipe

        recipe = load_recipe(self.path)
        cells, skipped = expand(recipe, jobs=1)
        self.recipe = recipe
        text = self.path.read_text()
        lines = {m.name: (key_line(text, f"models[{i}]") or 1) - 1 for i, m in enumerate(recipe.models)}
        for cell in cells:
            yield CellItem.from_parent(self, name=cell.id, cell=cell, line=lines.get(cell.model, 0))
        for left_out in skipped:
            yield SkippedCellItem.from_parent(self, name=left_out["id"], reason=left_out["reason"],
                                              line=lines.get(left_out["id"].split("/")[0], 0))

    def work_dir(self) -> Path:
        """One work directory per session under the recipe's ci.work_dir (spec, result and log of each cell)."""
        if not hasattr(self, "_work"):
            self.recipe.work_dir.mkdir(parents=True, exist_ok=True)
            self._work = Path(tempfile.mkdtemp(prefix="pytest-", dir=self.recipe.work_dir))
        return self._work


class CellItem(pytest.Item):
    """One recipe cell: export (cached), preset, validate on its runtime, in its own process."""

    def __init__(self, *, cell: Any, line: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = cell
        self.line = line
        self.result: dict[str, Any] | None = None

    def runtest(self) -> None:
        """Run the cell as the local executor of `tracefuse ci` does; raise CellFailed unless it passed."""
        from tracefuse.jobs.matrix import run_cell_forked

        self.result = run_cell_forked(self.cell, self.parent.work_dir() / self.cell.id.replace("/", "__"))
        for output, metrics in (self.result.get("metrics") or {}).items():
            for key, value in metrics.items():
                self.user_properties.append((f"{output}.{key}", value))
        self.user_properties.append(("cache", self.result.get("cache")))
        if self.result["status"] != "pass":
            raise CellFailed(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """For a failed cell: its status, the metric that failed and every failing output, not a Python trace."""
        if not isinstance(excinfo.value, CellFailed):
            return super().repr_failure(excinfo, style=style)
        from tracefuse.validation.reports_junit import failure_message

        r = excinfo.value.result
        lines = [f"tracefuse cell {self.cell.id}: {r['status'].upper()}: {failure_message(r)}"]
        for f in r.get("failures") or []:
            value = f"{f['value']:.3g}" if isinstance(f.get("value"), (int, float)) else "n/a"
            lines.append(f"  output '{f['output']}' case {f['case']}: {f['metric']} = {value} "
                         f"(atol {f['atol']:g}, rtol {f['rtol']:g}): {f['reason']}")
        if r.get("message") and not r.get("failures"):
            lines.append(r["message"])
        if r.get("traceback"):
            lines.append(r["traceback"])
        if r.get("log"):
            lines.append(f"cell log: {r['log']}")
        return "\n".join(lines)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Where the item comes from (the recipe and its model's 0-based line), as pytest prints it."""
        return self.path, self.line, f"tracefuse cell {self.cell.id}"


class SkippedCellItem(pytest.Item):
    """A model × format × runtime combination that the recipe lists but that runtime cannot run."""

    def __init__(self, *, reason: str, line: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        self.line = line
        self.add_marker(pytest.mark.skip(reason=reason))

    def runtest(self) -> None:
        """Never reached: the skip mark skips the item at setup, with the matrix's reason."""
        pytest.skip(self.reason)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Where the item comes from (the recipe and its model's 0-based line), as pytest prints it."""
        return self.path, self.line, f"tracefuse cell {self.name} (skipped)"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append the items of each --tracefuse-recipe file (before -k / -m deselection runs)."""
    recipes = config.getoption("tracefuse_recipes") or []
    if not recipes:
        return
    from tracefuse.errors import TracefuseError

    for recipe in recipes:
        node = RecipeFile.from_parent(session, path=Path(recipe).absolute())
        try:
            found = list(node.collect())
        except TracefuseError as exc:
            raise pytest.UsageError(f"{OPTION} {recipe}: {exc}") from exc
        # Report the collection as pytest's own collectors do, so "collected N items" counts the cells.
        session.ihook.pytest_collectreport(report=pytest.CollectReport(node.nodeid, "passed", None, found))
        items.extend(found)
