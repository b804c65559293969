"""examples/ci-recipe.toml end to end through `tracefuse ci`: 3 tiny Transformers models × 2 formats ×
2 runtimes, JUnit XML (parsed), JSON and HTML reports, and a second run that exports nothing (cache log)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tracefuse.jobs.cache import ExportCache

EXAMPLE = Path(__file__).parents[2] / "examples" / "ci-recipe.toml"
MODELS, FORMATS, RUNTIMES = ("bert", "vit", "gpt2"), ("onnx", "onnx-ts"), ("ort-cpu", "onnx-reference")


def _ci(recipe: Path, cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from tracefuse.cli import entrypoint; entrypoint()", "ci", "--recipe",
               str(recipe), "--cache-dir", str(cache), "--json", str(out / "ci.json"), "--junit",
               str(out / "ci.xml"), "--html", str(out / "ci.html"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "300"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The example recipe (copied so its work_dir lands in a temp dir) run twice with one cache."""
    tmp = tmp_path_factory.mktemp("example")
    (tmp / "recipe").mkdir()
    recipe = shutil.copy(EXAMPLE, tmp / "recipe" / "ci-recipe.toml")
    first, second = tmp / "first", tmp / "second"
    first.mkdir()
    second.mkdir()
    cache = ExportCache(tmp / "cache")
    done = _ci(Path(recipe), cache.root, first)
    assert done.returncode == 0, done.stdout + done.stderr
    between = len(cache.events())
    again = _ci(Path(recipe), cache.root, second)
    assert again.returncode == 0, again.stdout + again.stderr
    return cache, between, first, second


@pytest.mark.slow
def test_example_runs_3_models_x_2_formats_x_2_runtimes(runs):
    _, _, first, _ = runs
    report = json.loads((first / "ci.json").read_text())
    cells = {(c["model"], c["format_name"], c["runtime"]): c["status"] for c in report["cells"]}
    assert cells == {(m, f, r): "pass" for m in MODELS for f in FORMATS for r in RUNTIMES}
    assert report["skipped"] == []
    for c in report["cells"]:  # real numbers, within the recipe's tolerance
        worst = max(m["max_abs"] for m in c["metrics"].values())
        assert 0 <= worst <= 1e-4 and c["size_bytes"] > 0, c["id"]
        assert set(c["error_hist"]) == set(c["metrics"])  # every value of every case lands in one bin
        for output, hist in c["error_hist"].items():
            values = sum(math.prod(o["shape"]) for case in c["report"]["cases"] for o in case["outputs"]
                         if o["name"] == output)
            assert sum(hist["counts"]) == values > 0 and hist["counts"][-1] == 0, (c["id"], output)


@pytest.mark.slow
def test_example_junit_is_valid_with_a_testcase_per_combination(runs):
    _, _, first, _ = runs
    root = ET.parse(first / "ci.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == set(MODELS)
    for suite in suites.values():
        cases = suite.findall("testcase")
        assert len(cases) == len(FORMATS) * len(RUNTIMES)
        assert all(c.find(k) is None for c in cases for k in ("failure", "error", "skipped"))
        assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0")


@pytest.mark.slow
def test_example_html_has_a_table_per_model(runs):
    _, _, first, _ = runs
    page = (first / "ci.html").read_text()
    sections = page.split('<section class="model">')[1:]
    assert [s.split("</h2>")[0] for s in sections] == [f"<h2>{m}" for m in MODELS]
    for section in sections:  # a row per cell, a latency and an error plot per model, nothing fetched
        assert section.count('<td class="pass">pass</td>') == 4
        # latency and error bars, and an error histogram per output with a bar series per cell
        assert section.count("<svg") == 2 + section.count('aria-label="error histogram') >= 3
        assert '<td class="l">onnx/none/ort-cpu</td>' in section
    assert "src=\"http" not in page and "<script" not in page


@pytest.mark.slow
def test_example_second_run_exports_nothing(runs):
    cache, between, first, second = runs
    events = cache.events()
    assert [e["event"] for e in events[:between]].count("export") == len(MODELS) * len(FORMATS)
    cells = len(MODELS) * len(FORMATS) * len(RUNTIMES)  # each cell looks its export up once
    assert [e["event"] for e in events[between:]] == ["hit"] * cells
    again = json.loads((second / "ci.json").read_text())
    assert again["cache"]["exports"] == 0 and again["cache"]["hits"] == cells
    assert {c["cache"] for c in again["cells"]} == {"hit"}
    before = {c["id"]: c["metrics"] for c in json.loads((first / "ci.json").read_text())["cells"]}
    assert {c["id"]: c["metrics"] for c in again["cells"]} == before


@pytest.mark.slow
def test_example_on_a_local_ray_instance_gives_the_local_results(runs):
    pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'tracefuse[ray]'")
    cache, _, first, _ = runs
    out = first.parent / "ray"
    out.mkdir()
    done = _ci(first.parent / "recipe" / "ci-recipe.toml", cache.root, out, "--executor", "ray")
    assert done.returncode == 0, done.stdout + done.stderr
    local = json.loads((first / "ci.json").read_text())
    remote = json.loads((out / "ci.json").read_text())
    assert (local["executor"], remote["executor"]) == ("local", "ray")
    assert remote["summary"] == {**local["summary"], "skipped": 0}
    same = ("id", "status", "failures", "metrics", "error_hist", "cache_key", "passes", "size_bytes")
    assert [{k: c.get(k) for k in same} for c in remote["cells"]] == [{k: c.get(k) for k in same}
                                                                       for c in local["cells"]]
