"""TorchScript format: export through the flat wrapper, run with torch.jit.load, validate at both shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracefuse import api
from tracefuse.validation.inputs import generate_inputs


def _case_names(report):
    return [c["name"] for c in report["cases"]]


@pytest.fixture(scope="module")
def ts_bert(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts") / "bert"
    return api.export("tiny:bert", out, format="torchscript")


def test_bert_exports_and_validates_at_both_shapes(ts_bert):
    report, manifest = ts_bert.report, ts_bert.artifact.manifest
    assert report["passed"], report
    assert report["runtime"] == "torchscript"
    assert _case_names(report) == ["batch=1,sequence=16", "batch=3,sequence=37"]
    assert manifest.format == "torchscript" and manifest.graph == "model.pt"
    assert (ts_bert.artifact.path / "model.pt").is_file()
    assert manifest.export["exporter"] == "torch.jit.trace"
    assert any("deprecated" in w for w in manifest.export["trace_warnings"])
    on_disk = json.loads((ts_bert.artifact.path / "manifest.json").read_text())
    assert on_disk["validation"]["passed"] is True


def test_loaded_module_matches_eager_model_at_untraced_shape(ts_bert):
    from tracefuse.exporters.sources import load_source

    manifest = ts_bert.artifact.manifest
    feeds = generate_inputs(manifest.inputs, {"batch": 4, "sequence": 21}, seed=7)
    with api.load(ts_bert.artifact.path) as runner:
        got = runner.infer(feeds)
    model = load_source("tiny:bert", None).module.eval()
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    assert got["last_hidden_state"].shape == (4, 21, want.shape[-1])
    np.testing.assert_allclose(got["last_hidden_state"], want, atol=1e-5, rtol=1e-4)


def test_inspect_summarizes_the_torchscript_graph(ts_bert):
    info = api.inspect(ts_bert.artifact.path)
    fs = info["format_summary"]
    assert fs["graph_bytes"] == (ts_bert.artifact.path / "model.pt").stat().st_size
    assert fs["nodes"] > 50
    assert fs["ops"].get("aten::linear", 0) >= 2


@pytest.mark.parametrize("model", ["tiny:vit", "tiny:gpt2"])
def test_other_families_validate(tmp_path, model):
    result = api.export(model, tmp_path / "a", format="torchscript")
    assert result.report["passed"], result.report
    names = [c["name"] for c in result.report["cases"]]
    assert len(names) >= 2 and names[0].startswith("batch=1") and names[1].startswith("batch=3")
