"""TFLite edge quantization modes on a tiny model: weight-only int8 and fp16 store the weights they claim,
static calibrates on a user .npz fitted to the signature, and `tracefuse quantize` routes TFLite artifacts."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.cli import app
from tracefuse.errors import SourceError, TracefuseError

pytest.importorskip("ai_edge_quantizer", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")
pytest.importorskip("litert_torch", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")

from tracefuse.api_tflite import fit_calibration, quantize_tflite  # noqa: E402

SPECS = (TensorSpec("input_ids", "int32", ("batch", "sequence")), TensorSpec("attention_mask", "int32",
                                                                             ("batch", "sequence")))


def test_fit_calibration_cycles_rows_and_cuts_or_pads_axes():
    ids = np.arange(1, 16, dtype=np.int64).reshape(3, 5)  # 3 rows of 5 tokens
    mask = np.ones((3, 5), np.int64)
    short = fit_calibration({"input_ids": ids, "attention_mask": mask}, SPECS, {"batch": 2, "sequence": 3})
    assert len(short) == 2  # rows (0, 1) and (2, 0)
    np.testing.assert_array_equal(short[0]["input_ids"], [[1, 2, 3], [6, 7, 8]])
    np.testing.assert_array_equal(short[1]["input_ids"], [[11, 12, 13], [1, 2, 3]])
    assert short[0]["input_ids"].dtype == np.int32
    long = fit_calibration({"input_ids": ids, "attention_mask": mask}, SPECS, {"batch": 1, "sequence": 7})
    assert len(long) == 3
    np.testing.assert_array_equal(long[2]["input_ids"], [[11, 12, 13, 14, 15, 0, 0]])
    np.testing.assert_array_equal(long[2]["attention_mask"], [[1, 1, 1, 1, 1, 0, 0]])  # padding is masked


def test_fit_calibration_names_what_is_missing_or_misshapen():
    with pytest.raises(TracefuseError, match="missing attention_mask"):
        fit_calibration({"input_ids": np.ones((2, 4))}, SPECS, {"batch": 1, "sequence": 4})
    with pytest.raises(TracefuseError, match="wrong rank"):
        fit_calibration({"input_ids": np.ones(4), "attention_mask": np.ones(4)}, SPECS, {"batch": 1, "sequence": 4})


@pytest.fixture(scope="module")
def tfl_bert(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "bert"
    return api.export("tiny:bert", out, format="tflite", options={"shapes": "2x8"}, validate=False).artifact


def _dtypes(path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    return {np.dtype(t["dtype"]).name for t in Interpreter(model_path=str(path)).get_tensor_details()}


@pytest.mark.parametrize(("mode", "weight_dtype", "max_ratio", "min_cosine", "min_sqnr"), [
    ("fp16", "float16", 0.75, 0.9999, 50.0),
    ("weight-only", "int8", 0.65, 0.999, 20.0),  # tiny model: graph overhead is a large share of the file
])
def test_weight_modes_store_their_dtype_and_keep_the_numbers(tfl_bert, tmp_path, mode, weight_dtype, max_ratio,
                                                             min_cosine, min_sqnr):
    assert weight_dtype not in _dtypes(tfl_bert.graph_path)
    result = quantize_tflite(tfl_bert.path, tmp_path / mode, mode=mode, min_cosine=min_cosine)
    assert weight_dtype in _dtypes(result.artifact.graph_path)
    report = result.report
    assert report["passed"], report
    stats = result.entry["stats"]
    assert stats["size_before"] == tfl_bert.graph_path.stat().st_size
    assert stats["size_after"] == result.artifact.graph_path.stat().st_size <= max_ratio * stats["size_before"]
    q = report["quality"]
    assert q["min_cosine"] >= min_cosine and q["min_sqnr_db"] >= min_sqnr
    assert result.artifact.manifest.passes[-1]["quality"] == q


def test_static_calibrates_on_a_user_npz(tfl_bert, tmp_path):
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input_ids=rng.integers(0, 1000, (5, 12)), attention_mask=np.ones((5, 12), np.int64),
             token_type_ids=np.zeros((5, 12), np.int64))
    result = quantize_tflite(tfl_bert.path, tmp_path / "static", mode="static", min_cosine=0.99, calibration=calib)
    assert result.entry["calibration"] == "file:calib.npz"
    assert "int8" in _dtypes(result.artifact.graph_path)
    q = result.report["quality"]
    assert result.report["passed"] and q["min_cosine"] >= 0.99 and q["min_sqnr_db"] > 15.0, q


def test_litert_runner_dequantizes_the_int8_outputs_of_a_static_graph(tfl_bert, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from tracefuse.validation.inputs import generate_inputs

    static = quantize_tflite(tfl_bert.path, tmp_path / "static", mode="static", validate=False).artifact
    raw = Interpreter(model_path=str(static.graph_path)).get_signature_runner("batch2_sequence8")
    assert {np.dtype(d["dtype"]).name for d in raw.get_output_details().values()} == {"int8"}
    feeds = generate_inputs(static.manifest.inputs, {"batch": 2, "sequence": 8}, seed=5)
    with api.load(static.path) as runner:
        quantized = runner.infer(feeds)
    with api.load(tfl_bert.path) as runner:
        fp32 = runner.infer(feeds)
    for name, value in quantized.items():
        assert value.dtype == np.float32
        cos = float(np.dot(value.ravel(), fp32[name].ravel()) / np.linalg.norm(value) / np.linalg.norm(fp32[name]))
        assert cos > 0.99 and np.abs(value - fp32[name]).max() < 0.25 * np.abs(fp32[name]).max()
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.ones((2, 8), np.int64))
    with pytest.raises(TracefuseError, match="lacks graph inputs"):
        quantize_tflite(tfl_bert.path, tmp_path / "bad", mode="static", calibration=bad)


def test_calibration_sentences_need_a_tokenizer(tfl_bert, tmp_path):
    with pytest.raises(SourceError, match="tokenizer"):
        quantize_tflite(tfl_bert.path, tmp_path / "t", mode="static", calibration_texts=["a sentence"])


def test_quantize_command_routes_tflite_artifacts(tfl_bert, tmp_path):
    result = CliRunner().invoke(app, ["quantize", str(tfl_bert.path), "-o", str(tmp_path / "q"), "--mode", "fp16"])
    assert result.exit_code == 0, result.output
    assert "MB ->" in result.output and "SQNR" in result.output and "validation passed" in result.output
    assert "float16" in _dtypes(tmp_path / "q" / "model.tflite")
