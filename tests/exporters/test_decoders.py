"""Decoders with a KV cache: one graph for prefill and decode, validated step by step against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from tracefuse.artifact import load_artifact
from tracefuse.exporters.archspec import resolve_spec
from tracefuse.exporters.sources import load_source
from tracefuse.runtimes import open_runner
from tracefuse.validation.inputs import generate_inputs
from tracefuse.validation.steps import add_step_cases, step_cases


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_export_validates_prefill_and_two_decode_steps(decoder_artifact, model_type):
    path, report = decoder_artifact(model_type)
    assert report["passed"], report
    names = [c["name"] for c in report["cases"]]
    # Two generated shapes (a prefill with past 0, a decode step on a long past), then the cache-fed steps.
    assert "batch=1,sequence=16,past_sequence=0,total_sequence=16" in names
    assert "batch=3,sequence=1,past_sequence=37,total_sequence=38" in names
    steps = [c for c in report["cases"] if c["name"].startswith("step ")]
    assert [c["name"].split(":")[0] for c in steps] == ["step 0", "step 1", "step 2"]
    # Each decode step's past is the previous step's present: its length grows by one token a step.
    pasts = [c["inputs"]["past_key_values.0.key"][2] for c in steps]
    assert pasts[0] == 0 and pasts[1] == steps[0]["inputs"]["input_ids"][1] and pasts[2] == pasts[1] + 1
    assert all(o["passed"] for c in steps for o in c["outputs"])


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_manifest_names_the_cache_axes(decoder_artifact, model_type):
    path, _ = decoder_artifact(model_type)
    manifest = load_artifact(path).manifest
    config = load_source(f"tiny:{model_type}", "text-generation").config
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    inputs = {s.name: s.shape for s in manifest.inputs}
    outputs = {s.name: s.shape for s in manifest.outputs}
    assert inputs["input_ids"] == ("batch", "sequence")
    assert inputs["attention_mask"] == ("batch", "total_sequence")
    assert inputs["position_ids"] == ("batch", "sequence")
    for i in range(layers):
        for kind in ("key", "value"):
            assert inputs[f"past_key_values.{i}.{kind}"] == ("batch", heads, "past_sequence", head_dim)
            assert outputs[f"present.{i}.{kind}"] == ("batch", heads, "total_sequence", head_dim)
    assert outputs["logits"] == ("batch", "sequence", config.vocab_size)
    assert len(manifest.inputs) == 3 + 2 * layers and len(manifest.outputs) == 1 + 2 * layers


class _StaleCacheRunner:
    """Wraps a runner and hands back a corrupted cache: the step validation must see the next step fail."""

    def __init__(self, runner):
        self.inner, self.name, self.inputs, self.outputs = runner, "stale", runner.inputs, runner.outputs
        self.last_latency_ms = 0.0

    def infer(self, feeds):
        result = dict(self.inner.infer(feeds))
        result["present.0.value"] = result["present.0.value"] * 0.5
        return result


def test_step_validation_fails_when_the_cache_is_wrong(decoder_artifact):
    from tracefuse.api import _reference

    path, _ = decoder_artifact("gpt2")
    artifact = load_artifact(path)
    loaded = load_source("tiny:gpt2", "text-generation")
    _, reference = _reference(loaded, artifact.manifest.inputs, artifact.manifest.outputs)
    with open_runner(artifact) as runner:
        cases = step_cases(_StaleCacheRunner(runner), reference, artifact.manifest.tolerance)
    by_output = [{o["name"]: o["passed"] for o in c["outputs"]} for c in cases]
    assert by_output[0]["logits"]  # the prefill does not read the cache
    assert not by_output[0]["present.0.value"]
    assert not by_output[1]["logits"]  # the decode step read the corrupted cache


def test_step_cases_are_added_only_for_cache_graphs(bert_artifact):
    artifact = load_artifact(bert_artifact)
    report = {"cases": [], "passed": True, "tolerance": {"atol": 1e-4, "rtol": 1e-3}}
    with open_runner(artifact) as runner:
        assert add_step_cases(report, runner, runner) == {**report, "cases": []}


def test_decoder_feature_extraction_spec_has_the_cache_and_encoders_do_not():
    spec = resolve_spec(load_source("tiny:gpt2", "feature-extraction"))
    assert [n for n in spec.input_names if n.startswith("past_key_values.")] == [
        "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert {"past_sequence": 0, "sequence": 16}.items() <= spec.validation_shapes[0].items()
    bert = resolve_spec(load_source("tiny:bert", "feature-extraction"))
    assert not any(n.startswith("past_key_values") for n in bert.input_names)


def test_positions_fill_counts_on_from_the_past():
    spec = resolve_spec(load_source("tiny:llama", "text-generation"))
    feeds = generate_inputs(spec.inputs, {"batch": 2, "sequence": 3, "past_sequence": 5, "total_sequence": 8})
    np.testing.assert_array_equal(feeds["position_ids"], [[5, 6, 7], [5, 6, 7]])
    assert feeds["past_key_values.0.key"].shape[2] == 5 and feeds["attention_mask"].shape == (2, 8)


def test_encoder_decoder_export_has_both_graphs_and_validates_through_them(decoder_artifact):
    path, report = decoder_artifact("t5", "text2text-generation")
    assert report["passed"], report
    manifest = load_artifact(path).manifest
    encoder = manifest.export["encoder"]
    assert (path / encoder["graph"]).is_file() and encoder["graph"] in manifest.files
    assert [t["name"] for t in encoder["outputs"]] == ["last_hidden_state"]
    inputs = {s.name: s.shape for s in manifest.inputs}
    assert inputs["encoder_hidden_states"][:2] == ("batch", "encoder_sequence")
    assert inputs["past_key_values.0.key"][2] == "past_sequence"
    names = [c["name"] for c in report["cases"]]
    # The encoder graph is compared, then the decoder graph fed with each engine's own encoder states.
    assert names.index("encoder") < names.index("step 0: prefill (past_sequence=0)")
    assert {"step 1: decode (past_sequence=2)", "step 2: decode (past_sequence=3)"} <= set(names)
