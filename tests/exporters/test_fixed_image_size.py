"""Vision models that run eagerly at any size but whose traced graph holds only the trace size's branch or
padding (swin-based windows, TensorFlow "SAME" padding) keep the config's image size; batch stays dynamic."""

from __future__ import annotations

import onnx
import pytest

from tracefuse import api


@pytest.mark.parametrize("model_type", ["swinv2", "mobilenet_v2"])
def test_fixed_image_size_models_validate_at_two_batches(tmp_path, model_type):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert [c["name"] for c in result.report["cases"]] == ["batch=1", "batch=3"]
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and all(isinstance(d, int) for d in dims[1:])


def test_a_model_that_runs_only_at_its_declared_rectangle_gets_that_rectangle(tmp_path):
    # mgp-str reads a 32 x 128 text line and refuses square images: its config's (height, width) is used
    result = api.export("tiny:mgp-str", tmp_path / "m", task="feature-extraction", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 32, 128]
