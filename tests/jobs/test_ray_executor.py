"""The Ray executor against a local Ray instance started here: the same recipe gives the same results as the
local executor (cells, statuses, failing metrics, error metrics), a crash and a timeout fail only their own
cells, and `tracefuse ci --executor ray --address` runs on that existing instance, reusing the shared cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tracefuse.errors import MissingDependencyError, TracefuseError
from tracefuse.jobs.cache import ExportCache
from tracefuse.jobs.executors import LocalExecutor, RayExecutor, make_executor
from tracefuse.jobs.matrix import run_recipe
from tracefuse.jobs.recipe import load_recipe

RECIPE = """\
[ci]
jobs = 2
cache_dir = "cache-local"
work_dir = "work"

[formats.onnx-ts]
format = "onnx"
options = { exporter = "torchscript" }

[defaults]
formats = ["onnx-ts", "torchscript"]
runtimes = ["ort-cpu", "torchscript"]
tolerance = { atol = 1e-4, rtol = 1e-3 }
timeout_s = 240

[[models]]
source = "tests.jobs.models:mlp"
name = "mlp"

[[models]]
source = "tests.jobs.models:norm"
name = "norm"

[[models.overrides]]
format = "onnx-ts"
tolerance = { atol = 0.0, rtol = 0.0 }   # impossible for ONNX Runtime vs PyTorch: this cell must fail

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
timeout_s = 6
"""

# What must match between executors; timings, paths, logs and messages worded per executor may differ, and so
# may a TorchScript archive's size (its mangled class names count the scripts made earlier in the process).
SAME = ("id", "status", "failures", "metrics", "cache", "cache_key", "passes")


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        make_executor("ray")
    assert "pip install 'tracefuse[ray]'" in str(info.value)


def test_address_without_ray_executor_is_a_usage_error():
    with pytest.raises(TracefuseError, match="--address is only used with --executor ray"):
        make_executor("local", address="ray://head:10001")
    with pytest.raises(TracefuseError, match="unknown executor 'dask'"):
        make_executor("dask")


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with 2 CPUs, started by the test and shut down after it."""
    ray = pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'tracefuse[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(ray_instance, tmp_path_factory):
    """The recipe run once with the local executor and once with the Ray executor, each with its own cache."""
    tmp = tmp_path_factory.mktemp("ray")
    (tmp / "tracefuse.toml").write_text(RECIPE)
    recipe = load_recipe(tmp / "tracefuse.toml")
    local = run_recipe(recipe, executor=LocalExecutor())
    remote = run_recipe(dataclasses.replace(recipe, cache_dir=tmp / "cache-ray"), executor=RayExecutor())
    return tmp, local, remote


def test_ray_gives_the_same_results_as_local(both_runs):
    _, local, remote = both_runs
    assert (local["executor"], remote["executor"]) == ("local", "ray")
    assert [c["id"] for c in remote["cells"]] == [c["id"] for c in local["cells"]]
    for mine, theirs in zip(local["cells"], remote["cells"]):
        assert {k: mine.get(k) for k in SAME} == {k: theirs.get(k) for k in SAME}, mine["id"]
        if mine["format"] == "onnx":
            assert mine.get("size_bytes") == theirs.get("size_bytes"), mine["id"]
    assert remote["summary"] == local["summary"]
    assert remote["skipped"] == local["skipped"]
    # both exported every (model, format) pair that loads, each into its own cache
    assert remote["cache"]["exports"] == local["cache"]["exports"] == 4


def test_ray_run_has_passes_a_numerical_failure_a_crash_and_a_timeout(both_runs):
    _, _, remote = both_runs
    status = {c["id"]: c["status"] for c in remote["cells"]}
    assert status.pop("norm/onnx-ts/none/ort-cpu") == "fail"
    assert status.pop("broken/onnx-ts/none/ort-cpu") == "error"
    assert status.pop("slow/onnx-ts/none/ort-cpu") == "timeout"
    assert set(status.values()) == {"pass"} and len(status) == 3
    fail = next(c for c in remote["cells"] if c["status"] == "fail")
    assert fail["failures"][0]["metric"] == "max_abs" and fail["failures"][0]["value"] > 0
    broken = next(c for c in remote["cells"] if c["model"] == "broken")
    assert "broken on purpose" in broken["message"]


def test_cli_runs_on_an_existing_cluster_and_reuses_the_shared_cache(both_runs, ray_instance):
    tmp, _, remote = both_runs
    recipe = tmp / "passing.toml"
    recipe.write_text(RECIPE.split("[[models]]\nsource = \"tests.jobs.models:norm\"")[0])  # mlp only
    address = ray_instance.get_runtime_context().gcs_address
    cache = ExportCache(tmp / "cache-ray")
    before = len(cache.events())
    env = {**os.environ, "COLUMNS": "300"}
    result = subprocess.run(
        [sys.executable, "-c", "from tracefuse.cli import entrypoint; entrypoint()", "ci", "--recipe", str(recipe),
         "--executor", "ray", "--address", address, "--cache-dir", str(cache.root), "--json", str(tmp / "cli.json")],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp / "cli.json").read_text())
    assert report["executor"] == "ray" and report["summary"]["pass"] == report["summary"]["cells"] == 2
    assert report["cache"]["exports"] == 0 and report["cache"]["hits"] == 2
    assert [e["event"] for e in cache.events()[before:]] == ["hit"] * 2
    earlier = {c["id"]: c.get("metrics") for c in remote["cells"]}
    assert all(c["metrics"] == earlier[c["id"]] for c in report["cells"])
