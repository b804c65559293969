"""The pytest plugin: `pytest --tracefuse-recipe FILE` turns each recipe cell into an item, run in an inner
pytest (a subprocess, so the cell processes fork from a forkserver started in the inner run's directory)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

pytest_plugins = ["pytester"]

MODELS = '''
import torch


class Norm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        return torch.softmax(self.norm(self.proj(x)), dim=-1)


def norm():
    return Norm(), {"x": torch.randn(2, 8)}, {"x": {0: "batch"}}
'''

RECIPE = '''
[formats.onnx-ts]
format = "onnx"
options = { exporter = "torchscript" }

[defaults]
formats = ["onnx-ts"]
runtimes = ["ort-cpu", "torchscript"]   # torchscript does not run onnx: a skipped item per model
timeout_s = 240

[[models]]
source = "tinymodels:norm"
name = "good"
tolerance = { atol = 1e-4, rtol = 1e-3 }

[[models]]
source = "tinymodels:norm"
name = "strict"
tolerance = { atol = 0.0, rtol = 0.0 }   # ONNX Runtime and PyTorch differ in the last bits: must fail
'''


def test_each_cell_is_an_item_that_fails_with_its_metric(pytester):
    pytester.makepyfile(tinymodels=MODELS, test_plain="def test_plain():\n    assert sum([1, 2]) == 3\n")
    recipe = pytester.makefile(".toml", ci=RECIPE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tracefuse-recipe", str(recipe),
                                           "-rA", "--junitxml=junit.xml", timeout=600)
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*tracefuse cell strict/onnx-ts/none/ort-cpu: FAIL: max_abs * exceeds atol 0 + rtol 0*on output 'output'*",
        "*output 'output' case *: max_abs = * (atol 0, rtol 0)*",
        "PASSED test_plain.py::test_plain",
        "PASSED ci.toml::good/onnx-ts/none/ort-cpu",
        "SKIPPED [[]2[]] ci.toml*: runtime torchscript does not run onnx",
        "FAILED ci.toml::strict/onnx-ts/none/ort-cpu - tracefuse cell strict*",
    ])
    assert "Traceback" not in result.stdout.str()
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    assert cases["good/onnx-ts/none/ort-cpu"].find("failure") is None
    failure = cases["strict/onnx-ts/none/ort-cpu"].find("failure")
    assert failure is not None and "max_abs" in failure.text
    props = {p.get("name"): p.get("value") for p in cases["good/onnx-ts/none/ort-cpu"].iter("property")}
    assert 0 < float(props["output.max_abs"]) <= 1e-4 and float(props["output.cosine"]) > 0.9999


def test_keyword_selects_cells(pytester):
    pytester.makepyfile(tinymodels=MODELS)
    recipe = pytester.makefile(".toml", ci=RECIPE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tracefuse-recipe", str(recipe),
                                           "--collect-only", "-q", "-k", "strict and ort")
    result.stdout.fnmatch_lines(["ci.toml::strict/onnx-ts/none/ort-cpu", "*1/4 tests collected (3 deselected)*"])


def test_bad_recipe_is_a_usage_error(pytester):
    recipe = pytester.makefile(".toml", bad='[ci]\njobs = "many"\n\n[[models]]\nsource = "tiny:bert"\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tracefuse-recipe", str(recipe))
    assert result.ret == 4  # pytest's usage-error exit code
    result.stderr.fnmatch_lines(["*--tracefuse-recipe*bad.toml*:2: key 'ci.jobs' must be an integer >= 1*"])


def test_plugin_stays_idle_without_the_option(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    import sys\n    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
