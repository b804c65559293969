"""`tracefuse export --format ... --aot / --shapes` hand the format options to api.export."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tracefuse import api
from tracefuse.cli import app


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("argv", "fmt", "options"), [
    (["--format", "pt2", "--aot"], "pt2", {"aot": True}),
    (["--format", "tflite", "--shapes", "1x128,4x128"], "tflite", {"shapes": "1x128,4x128"}),
    (["--format", "torchscript"], "torchscript", None),
])
def test_format_flags_reach_the_api(monkeypatch, tmp_path, argv, fmt, options):
    seen = {}

    def fake_export(model, out, **kwargs):
        seen.update(kwargs, model=model)
        raise _Stop

    monkeypatch.setattr(api, "export", fake_export)
    result = CliRunner().invoke(app, ["export", "tiny:bert", "-o", str(tmp_path / "a"), *argv])
    assert isinstance(result.exception, _Stop), result.output
    assert seen["model"] == "tiny:bert" and seen["format"] == fmt
    assert seen["options"] == options


def test_help_lists_the_formats():
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("torchscript", "pt2", "tflite", "--aot", "--shapes"):
        assert word in result.output
