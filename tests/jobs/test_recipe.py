"""Recipe parsing: defaults merged into models, overrides, and errors that name the key and its line."""

from __future__ import annotations

import textwrap

import pytest

from tracefuse.jobs.matrix import expand
from tracefuse.jobs.recipe import RecipeError, key_line, load_recipe

GOOD = """\
[ci]
jobs = 2
timeout_s = 120

[formats.onnx-ts]
format = "onnx"
options = { exporter = "torchscript" }

[defaults]
formats = ["onnx", "onnx-ts"]
runtimes = ["ort-cpu"]
tolerance = { atol = 1e-4, rtol = 1e-3 }

[[models]]
source = "tiny:bert"

[[models]]
source = "tests.jobs.models:mlp"
name = "mlp"
formats = ["onnx-ts"]
tolerance = { atol = 1e-3 }

[[models.overrides]]
runtime = "ort-cpu"
tolerance = { rtol = 0.5 }
timeout_s = 30
"""


def _write(tmp_path, text: str):
    path = tmp_path / "tracefuse.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_and_overrides_are_merged_into_cells(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.jobs == 2 and [m.name for m in recipe.models] == ["bert", "mlp"]
    cells, skipped = expand(recipe)
    assert [c.id for c in cells] == ["bert/onnx/none/ort-cpu", "bert/onnx-ts/none/ort-cpu", "mlp/onnx-ts/none/ort-cpu"]
    assert skipped == []
    bert, _, mlp = cells
    assert bert.tolerance == {"atol": 1e-4, "rtol": 1e-3} and bert.timeout_s == 120
    assert cells[1].options == {"exporter": "torchscript"} and cells[1].format == "onnx"
    assert mlp.tolerance == {"atol": 1e-3, "rtol": 0.5} and mlp.timeout_s == 30


@pytest.mark.parametrize(
    ("edit", "key", "line"),
    [
        (("jobs = 2", "jobs = 0"), "ci.jobs", 2),
        (('runtimes = ["ort-cpu"]', 'runtimes = ["ort-nowhere"]'), "defaults.runtimes", 11),
        (("tolerance = { atol = 1e-3 }", "tolerance = { atol = -1 }"), "models[1].tolerance.atol", 21),
        (('runtime = "ort-cpu"', 'runtime = "tflite"'), "models[1].overrides[0].runtime", 24),
        (('name = "mlp"', 'nmae = "mlp"'), "models[1].nmae", 19),
        (('formats = ["onnx-ts"]', 'formats = ["tflite-ish"]'), "models[1].formats", 20),
        (('source = "tiny:bert"', "source = 3"), "models[0].source", 15),
    ],
)
def test_bad_key_is_named_with_its_line(tmp_path, edit, key, line):
    assert GOOD.count(edit[0]) == 1
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"{path}:{line}: key '{key}'" in str(info.value)
    assert info.value.exit_code == 2


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(_write(tmp_path, "[ci\njobs = 1\n"))
    with pytest.raises(RecipeError, match="no recipe at"):
        load_recipe(tmp_path / "absent.toml")
    with pytest.raises(RecipeError, match="key 'models' must list at least one model"):
        load_recipe(_write(tmp_path, "[ci]\njobs = 1\n"))


def test_key_line_finds_inline_and_nested_keys():
    text = GOOD
    assert key_line(text, "formats.onnx-ts.options") == 7
    assert key_line(text, "defaults.tolerance.rtol") == 12
    assert key_line(text, "models[1].overrides[0].timeout_s") == 26
    assert key_line(text, "models[0]") == 14
