"""TFLite edge quantization on the real all-MiniLM-L6-v2: dynamic int8 keeps cosine >= 0.99 to PyTorch
and shrinks the file to at most 30% of fp32."""

from __future__ import annotations

import pytest

from tracefuse import api
from tracefuse.errors import ArtifactError, TracefuseError

pytest.importorskip("ai_edge_quantizer", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")
pytest.importorskip("litert_torch", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")

from tracefuse.api_tflite import quantize_tflite  # noqa: E402


@pytest.mark.slow
def test_minilm_dynamic_int8(tmp_path):
    fp32 = api.export("builtin:all-MiniLM-L6-v2", tmp_path / "fp32", format="tflite", options={"shapes": "2x24"},
                      validate=False)
    result = quantize_tflite(fp32.artifact.path, tmp_path / "int8", mode="dynamic")
    report = result.report
    assert report["passed"], report
    assert report["criterion"] == "cosine >= 0.99"
    cosines = [o["cosine"] for c in report["cases"] for o in c["outputs"]]
    assert cosines and min(cosines) >= 0.99
    size_fp32 = (fp32.artifact.path / "model.tflite").stat().st_size
    size_int8 = (result.artifact.path / "model.tflite").stat().st_size
    assert size_int8 <= 0.30 * size_fp32
    assert result.artifact.manifest.passes[-1]["stats"]["size_after"] == size_int8
    assert result.artifact.manifest.validation["passed"] is True
    assert result.artifact.manifest.tolerance["min_cosine"] == 0.99
    worst = max(o["max_abs"] for c in report["cases"] for o in c["outputs"])
    assert result.artifact.manifest.tolerance["atol"] >= worst  # a later `tracefuse validate` passes too

    from typer.testing import CliRunner

    from tracefuse.cli import app

    cli = CliRunner().invoke(app, ["quantize-tflite", str(fp32.artifact.path), "-o", str(tmp_path / "w8"),
                                   "--mode", "weight-only", "--no-validate"])
    assert cli.exit_code == 0, cli.output
    assert "MB ->" in cli.output
    assert (tmp_path / "w8" / "model.tflite").stat().st_size <= 0.30 * size_fp32


def test_refuses_non_tflite_and_unknown_mode(bert_artifact, tmp_path):
    with pytest.raises(ArtifactError, match="rewrites TFLite artifacts"):
        quantize_tflite(bert_artifact, tmp_path / "q")
    with pytest.raises(TracefuseError, match="unknown TFLite quantization mode"):
        quantize_tflite(bert_artifact, tmp_path / "q", mode="int3")
