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
