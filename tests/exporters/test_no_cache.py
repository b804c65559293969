"""`use_cache=False` / `--no-cache`: a decoder-only model exported as one plain graph (input_ids,
attention_mask -> logits, no past key/values) to every format, validated at two shapes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tracefuse import api
from tracefuse.cli import app
from tracefuse.errors import ExportError
from tracefuse.exporters.archspec import resolve_spec
from tracefuse.exporters.cache_wrapper import make_wrapper
from tracefuse.exporters.sources import load_source

_TFLITE = all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert"))


def test_no_cache_spec_has_no_past_and_the_cache_spec_does():
    loaded = load_source("tiny:gpt2", "text-generation")
    plain = resolve_spec(loaded, use_cache=False)
    assert plain.input_names == ("input_ids", "attention_mask")
    assert [s.shape for s in plain.inputs] == [("batch", "sequence"), ("batch", "sequence")]
    cached = resolve_spec(loaded)
    assert any(n.startswith("past_key_values.") for n in cached.input_names)


def test_no_cache_wrapper_returns_the_models_logits_without_building_a_cache():
    loaded = load_source("tiny:gpt2", "text-generation")
    wrapper = make_wrapper(loaded.module, ("input_ids", "attention_mask"), ("logits",), use_cache=False)
    assert wrapper.call_kwargs == {"use_cache": False}
    ids = torch.randint(0, 1000, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        (logits,) = wrapper(ids, mask)
        direct = loaded.module(input_ids=ids, attention_mask=mask, use_cache=True)
    assert direct.past_key_values is not None  # the model would build a cache if asked
    torch.testing.assert_close(logits, direct.logits)


def test_encoder_decoder_is_refused_with_a_fix():
    with pytest.raises(ExportError, match="encoder-decoder") as info:
        resolve_spec(load_source("tiny:t5", "text2text-generation"), use_cache=False)
    assert "without --no-cache" in str(info.value)


@pytest.mark.parametrize("fmt", [
    "onnx", "torchscript", "pt2",
    pytest.param("tflite", marks=pytest.mark.skipif(not _TFLITE, reason="the tflite extra is not installed: "
                                                    "pip install 'tracefuse[tflite]'")),
])
def test_gpt2_without_cache_exports_and_validates_at_two_shapes(tmp_path, fmt):
    result = api.export("tiny:gpt2", tmp_path / fmt, format=fmt, task="text-generation", use_cache=False)
    report, manifest = result.report, result.artifact.manifest
    assert report["passed"], report
    assert [c["name"] for c in report["cases"]] == ["batch=1,sequence=16", "batch=3,sequence=37"]
    assert manifest.export["use_cache"] is False
    assert [s.name for s in manifest.inputs] == ["input_ids", "attention_mask"]
    assert [s.name for s in manifest.outputs] == ["logits"]
    for case in report["cases"]:
        (logits,) = case["outputs"]
        assert logits["top1"] == 1.0 and logits["cosine"] > 0.9999
    if fmt == "tflite":
        assert {s.name: s.dtype for s in manifest.inputs} == {"input_ids": "int32", "attention_mask": "int32"}
    if fmt == "onnx":  # a later `validate` rebuilds the same no-cache reference from the manifest
        assert api.validate(result.artifact.path)["passed"]
        with api.load(result.artifact.path) as runner:
            feeds = {"input_ids": np.array([[5, 6, 7, 8, 9]], np.int64), "attention_mask": np.ones((1, 5), np.int64)}
            out = runner.infer(feeds)
        assert set(out) == {"logits"} and out["logits"].shape == (1, 5, 1000)


def test_cli_no_cache_reaches_the_api(monkeypatch, tmp_path):
    seen = {}

    class _Stop(Exception):
        pass

    def fake_export(model, out, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(api, "export", fake_export)
    result = CliRunner().invoke(app, ["export", "tiny:gpt2", "-o", str(tmp_path / "a"), "--no-cache"])
    assert isinstance(result.exception, _Stop), result.output
    assert seen["use_cache"] is False
    CliRunner().invoke(app, ["export", "tiny:gpt2", "-o", str(tmp_path / "b")])
    assert seen["use_cache"] is True


def test_a_decoder_with_no_attention_layer_is_exported_without_a_cache(tmp_path):
    # bamba's default layers are all linear attention: its forward asks its own cache for a length that only an
    # attention layer keeps, and fails; it runs with use_cache=False, so it is exported as with --no-cache
    import json as _json

    from tracefuse import api as _api

    result = _api.export("tiny:bamba", tmp_path / "bamba", validate=True)
    assert result.report["passed"], result.report
    manifest = _json.loads((tmp_path / "bamba" / "manifest.json").read_text())
    assert manifest["export"]["use_cache"] is False
    assert not any(i["name"].startswith("past_key_values") for i in manifest["inputs"])
