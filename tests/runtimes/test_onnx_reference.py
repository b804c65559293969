"""The onnx-reference runtime: a second ONNX runtime that agrees with ONNX Runtime and refuses contrib ops."""

from __future__ import annotations

import numpy as np
import pytest

import tracefuse
from tracefuse.api_passes import optimize
from tracefuse.artifact import load_artifact
from tracefuse.errors import ArtifactError
from tracefuse.jobs.matrix import runs_format
from tracefuse.runtimes import open_runner


def _feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq - 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_reference_evaluator_agrees_with_onnxruntime(bert_artifact):
    art = load_artifact(bert_artifact)
    feeds = {k: v for k, v in _feeds(2, 11).items() if k in {s.name for s in art.manifest.inputs}}
    with open_runner(art, "ort-cpu") as ort, open_runner(art, "onnx-reference") as ref:
        a, b = ort.infer(feeds), ref.infer(feeds)
    assert list(a) == list(b) == [o.name for o in art.manifest.outputs]
    for name in a:
        assert a[name].shape == b[name].shape
        # two independent implementations: float32 rounding differs, the values must not
        np.testing.assert_allclose(b[name], a[name], atol=1e-5, rtol=1e-4)
        assert np.abs(a[name]).max() > 1e-3  # not trivially zero


def test_validate_on_reference_runtime(bert_artifact):
    report = tracefuse.validate(bert_artifact, runtime="onnx-reference")
    assert report["passed"], report
    assert report["runtime"] == "onnx-reference"
    assert len(report["cases"]) == 2


def test_refuses_contrib_ops(bert_artifact, tmp_path):
    out = tmp_path / "opt"
    optimize(bert_artifact, out, preset="cpu", validate=False)
    art = load_artifact(out)
    with pytest.raises(ArtifactError, match="standard ONNX ops only") as info:
        with open_runner(art, "onnx-reference") as runner:
            runner.infer({s.name: np.ones((1, 4), dtype=s.dtype) for s in art.manifest.inputs})
    assert "com.microsoft" in str(info.value)


def test_matrix_knows_it_runs_onnx_only():
    assert runs_format("onnx-reference", "onnx")
    assert not runs_format("onnx-reference", "torchscript")
