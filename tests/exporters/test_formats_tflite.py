"""TFLite format: litert-torch conversion to fixed-shape signatures, int64 inputs downcast to int32 and
recorded, run on LiteRT and validated at every signature's shape."""

from __future__ import annotations

import numpy as np
import pytest

from tracefuse import api
from tracefuse.errors import FeedError, TracefuseError
from tracefuse.exporters.tflite_exporter import parse_shapes, signature_name
from tracefuse.validation.inputs import generate_inputs

pytest.importorskip("litert_torch", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")


def test_parse_shapes():
    assert parse_shapes("1x128, 4x64", ["batch", "sequence"]) == ({"batch": 1, "sequence": 128},
                                                                  {"batch": 4, "sequence": 64})
    assert parse_shapes("2", ["batch"]) == ({"batch": 2},)
    for bad in ("1x128x3", "0x4", "axb", ""):
        with pytest.raises(TracefuseError):
            parse_shapes(bad, ["batch", "sequence"])
    assert signature_name({"batch": 1, "sequence": 16}) == "batch1_sequence16"


@pytest.fixture(scope="module")
def tfl_bert(tmp_path_factory):
    return api.export("tiny:bert", tmp_path_factory.mktemp("tfl") / "bert", format="tflite")


def test_bert_converts_with_int32_inputs_and_validates_both_shapes(tfl_bert):
    report, manifest = tfl_bert.report, tfl_bert.artifact.manifest
    assert report["passed"], report
    assert report["runtime"] == "litert"
    assert [c["name"] for c in report["cases"]] == ["batch=1,sequence=16", "batch=3,sequence=37"]
    assert manifest.graph == "model.tflite"
    assert manifest.export["enable_x64"] is False
    assert {s.name: s.dtype for s in manifest.inputs} == {
        "input_ids": "int32", "attention_mask": "int32", "token_type_ids": "int32"}
    assert manifest.export["dtype_changes"]["input_ids"] == "int64 -> int32"
    assert [s["name"] for s in manifest.export["signatures"]] == ["batch1_sequence16", "batch3_sequence37"]
    info = api.inspect(tfl_bert.artifact.path)["format_summary"]
    assert info["ops"].get("FULLY_CONNECTED", 0) >= 2
    assert sorted(info["signatures"]) == ["batch1_sequence16", "batch3_sequence37"]


def test_runner_refuses_a_shape_without_signature_and_int64_feeds(tfl_bert):
    manifest = tfl_bert.artifact.manifest
    with api.load(tfl_bert.artifact.path, threads=1) as runner:
        ok = runner.infer(generate_inputs(manifest.inputs, {"batch": 1, "sequence": 16}))
        assert ok["last_hidden_state"].shape[:2] == (1, 16)
        assert np.isfinite(ok["last_hidden_state"]).all()
        with pytest.raises(FeedError, match="batch=1,sequence=16"):
            runner.infer(generate_inputs(manifest.inputs, {"batch": 2, "sequence": 16}))
        feeds = generate_inputs(manifest.inputs, {"batch": 1, "sequence": 16})
        feeds64 = {k: v.astype(np.int64) for k, v in feeds.items()}
        with pytest.raises(FeedError, match="wrong dtype"):
            runner.infer(feeds64)


def test_vit_with_explicit_shapes_validates_exactly_those(tmp_path):
    result = api.export("tiny:vit", tmp_path / "vit", format="tflite", options={"shapes": "2"})
    assert result.report["passed"], result.report
    assert [c["name"] for c in result.report["cases"]] == ["batch=2"]
    assert result.artifact.manifest.validation_shapes == ({"batch": 2},)
    assert result.artifact.manifest.inputs[0].dtype == "float32"


def test_decoder_with_kv_cache_is_refused_clearly(tmp_path):
    from tracefuse.errors import ExportError

    with pytest.raises(ExportError, match="KV cache"):
        api.export("tiny:gpt2", tmp_path / "gpt2", format="tflite")
    assert not (tmp_path / "gpt2").exists()


def test_static_quantization_calibrates_and_reports_its_cosine(tfl_bert, tmp_path):
    pytest.importorskip("ai_edge_quantizer", reason="the tflite extra is not installed")
    from tracefuse.api_tflite import quantize_tflite

    result = quantize_tflite(tfl_bert.artifact.path, tmp_path / "static", mode="static-a16", min_cosine=0.5)
    entry = result.artifact.manifest.passes[-1]
    assert entry["recipe"] == "static_wi8_ai16"
    assert entry["stats"]["size_after"] < entry["stats"]["size_before"]
    cosines = [o["cosine"] for c in result.report["cases"] for o in c["outputs"]]
    assert len(cosines) == 4 and all(-1.0 <= c <= 1.0 for c in cosines)
    assert result.report["passed"] == all(c >= 0.5 for c in cosines)


def test_litert_runner_is_safe_from_several_threads(tfl_bert):
    """The interpreter is not re-entrant; the runner serializes calls so threads get identical results."""
    from concurrent.futures import ThreadPoolExecutor

    manifest = tfl_bert.artifact.manifest
    feeds = generate_inputs(manifest.inputs, manifest.validation_shapes[0], seed=3)
    with api.load(tfl_bert.artifact.path) as runner:
        expected = runner.infer(feeds)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: runner.infer(feeds), range(40)))
    for result in results:
        for name, value in expected.items():
            np.testing.assert_array_equal(result[name], value)
