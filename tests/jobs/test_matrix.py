"""`tracefuse ci` end to end: 3 tiny models × format variants × runtimes, reports, the export cache,
and a crash and a timeout that fail only their own cells.

The format and runtime axes grow as formats land: every registered format among GROWS_WITH joins the
matrix with the runtimes that run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tracefuse.exporters import FORMATS
from tracefuse.jobs.cache import ExportCache
from tracefuse.jobs.matrix import expand, runs_format
from tracefuse.jobs.recipe import load_recipe
from tracefuse.runtimes import RUNTIMES

MODELS = ["tests.jobs.models:mlp", "tests.jobs.models:conv", "tests.jobs.models:norm"]
GROWS_WITH = [f for f in ("torchscript", "pt2") if f in FORMATS]
FORMAT_NAMES = ["onnx-ts", "onnx-ts17", *GROWS_WITH]
RUNTIME_NAMES = ["ort-cpu", *[r for r in ("torchscript", "pt2") if r in RUNTIMES]]

RECIPE = """\
[ci]
jobs = 2
cache_dir = "cache"
work_dir = "work"

[formats.onnx-ts]
format = "onnx"
options = {{ exporter = "torchscript" }}

[formats.onnx-ts17]
format = "onnx"
options = {{ exporter = "torchscript", opset = 17 }}

[defaults]
formats = {formats}
runtimes = {runtimes}
tolerance = {{ atol = 1e-4, rtol = 1e-3 }}
timeout_s = 300
{models}"""


def _recipe(tmp_path, name: str, models: list[str], extra: str = "") -> str:
    body = "".join(f'\n[[models]]\nsource = "{m}"\nname = "{m.split(":")[1]}"\n' for m in models) + extra
    path = tmp_path / name
    path.write_text(RECIPE.format(formats=json.dumps(FORMAT_NAMES), runtimes=json.dumps(RUNTIME_NAMES), models=body))
    return str(path)


BROKEN = """
[[models]]
source = "tests.jobs.models:broken"
name = "broken"
formats = ["onnx-ts"]
runtimes = ["ort-cpu"]

[[models]]
source = "tests.jobs.models:slow"
name = "slow"
formats = ["onnx-ts"]
runtimes = ["ort-cpu"]
timeout_s = 4
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "COLUMNS": "400"}
    command = [sys.executable, "-c", "from tracefuse.cli import entrypoint; entrypoint()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The matrix plus a crashing and a hanging model, run once through the CLI."""
    tmp = tmp_path_factory.mktemp("ci")
    recipe = _recipe(tmp, "tracefuse.toml", MODELS, BROKEN)
    paths = {k: tmp / f"ci.{k}" for k in ("json", "xml", "html")}
    result = _cli("ci", "--recipe", recipe, "--json", str(paths["json"]), "--junit", str(paths["xml"]),
                  "--html", str(paths["html"]))
    return tmp, result, paths


def test_matrix_covers_every_model_format_runtime_pair(tmp_path):
    cells, skipped = expand(load_recipe(_recipe(tmp_path, "r.toml", MODELS)))
    pairs = {(f, r) for f in FORMAT_NAMES for r in RUNTIME_NAMES
             if runs_format(r, load_recipe(_recipe(tmp_path, "r.toml", MODELS)).formats[f].format)}
    assert len(cells) == len(MODELS) * len(pairs) >= 6
    assert len(cells) + len(skipped) == len(MODELS) * len(FORMAT_NAMES) * len(RUNTIME_NAMES)


def test_one_crash_and_one_timeout_fail_only_their_cells(first_run):
    _, result, paths = first_run
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(paths["json"].read_text())
    status = {c["id"]: c["status"] for c in report["cells"]}
    assert status.pop("broken/onnx-ts/none/ort-cpu") == "error"
    assert status.pop("slow/onnx-ts/none/ort-cpu") == "timeout"
    assert set(status.values()) == {"pass"} and len(status) >= 6
    broken = next(c for c in report["cells"] if c["model"] == "broken")
    assert "broken on purpose" in broken["message"]
    assert report["summary"]["pass"] == len(status) and report["summary"]["error"] == 1


def test_junit_has_one_testcase_per_cell(first_run):
    _, _, paths = first_run
    report = json.loads(paths["json"].read_text())
    root = ET.parse(paths["xml"]).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(report["cells"]) + len(report["skipped"])
    names = {f"{c.get('classname').split('.')[-1]}/{c.get('name')}" for c in cases}
    assert {c["id"] for c in report["cells"]} <= names
    errors = root.findall("./testsuite/testcase/error")
    assert sorted(e.get("type") for e in errors) == ["error", "timeout"]
    assert not root.findall("./testsuite/testcase/failure")


def test_html_report_is_self_contained(first_run):
    _, _, paths = first_run
    page = paths["html"].read_text()
    assert page.count('<section class="model">') == len(MODELS) + 2
    report = json.loads(paths["json"].read_text())
    histograms = {(c["model"], o) for c in report["cells"] for o in c.get("error_hist") or {}}
    assert histograms  # validated cells record an error histogram per output
    assert page.count('aria-label="error histogram') == len(histograms)
    assert page.count("<svg") == 2 * (len(MODELS) + 2) + len(histograms)
    assert "src=\"http" not in page and "<script" not in page


def test_second_run_reuses_the_cache(first_run, tmp_path):
    tmp, _, _ = first_run
    cache = ExportCache(tmp / "cache")
    first_exports = [e for e in cache.events() if e["event"] == "export"]
    report = json.loads((tmp / "ci.json").read_text())
    passing = [c for c in report["cells"] if c["status"] == "pass"]
    # one export per (model, format variant); the other runtimes of that pair hit the cache
    assert len(first_exports) == len({(c["model"], c["format_name"]) for c in passing})
    recipe = _recipe(tmp, "again.toml", MODELS)
    again = _cli("ci", "--recipe", recipe, "--json", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stdout + again.stderr
    events = cache.events()[len(cache.events()) - len(passing):]
    assert [e["event"] for e in events] == ["hit"] * len(passing)
    second = json.loads((tmp_path / "again.json").read_text())
    assert second["cache"] == {"dir": str(cache.root), "exports": 0, "hits": len(passing)}
    assert {c["cache"] for c in second["cells"]} == {"hit"}


def test_bad_recipe_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[ci]\njobs = "many"\n\n[[models]]\nsource = "tiny:bert"\n')
    result = _cli("ci", "--recipe", str(path))
    assert result.returncode == 2
    assert f"{path}:2: key 'ci.jobs'" in result.stderr.replace("\n", "")
