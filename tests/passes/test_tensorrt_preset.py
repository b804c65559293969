"""The `tensorrt` preset feeds TensorRT's ONNX parser, which knows no com.microsoft contrib ops: its output on
tiny:bert (and after the fp16 pass, the GPU flow) must hold standard-domain ops only, and still compute what
the unoptimized graph computes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tracefuse.artifact import load_artifact
from tracefuse.graphs.onnx_file import load_onnx
from tracefuse.passes import _ort
from tracefuse.passes.manager import Pipeline, preset_passes
from tracefuse.validation.inputs import generate_inputs

STANDARD_DOMAINS = ("", "ai.onnx")


def _domains(model: ir.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        counts[node.domain] = counts.get(node.domain, 0) + 1
    return counts


def _run(bert_artifact, names):
    art = load_artifact(bert_artifact)
    model = load_onnx(art.graph_path)
    feeds = generate_inputs(art.manifest.inputs, art.manifest.validation_shapes[-1], seed=5)
    expected = _ort.run_cases(_ort.session(model), [("c", feeds)])[0]
    result = Pipeline.from_names(names).run(model)
    actual = _ort.run_cases(_ort.session(result.model), [("c", feeds)])[0]
    return result.model, expected, actual


@pytest.mark.parametrize("extra", [(), ("fp16",)], ids=["fp32", "fp16"])
def test_tensorrt_preset_keeps_standard_ops_only(bert_artifact, extra):
    model, expected, actual = _run(bert_artifact, [*preset_passes("tensorrt"), *extra])
    domains = _domains(model)
    assert set(domains) <= set(STANDARD_DOMAINS), f"non-standard op domains: {domains}"
    assert "com.microsoft" not in model.opset_imports
    tol = 1e-2 if extra else 1e-5
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=tol, atol=tol, err_msg=name)


def test_the_domain_check_sees_contrib_ops(bert_artifact):
    # The ONNX Runtime preset does fuse into com.microsoft ops: the check above can fail.
    model, _, _ = _run(bert_artifact, list(preset_passes("cuda")))
    assert _domains(model).get("com.microsoft", 0) > 0
