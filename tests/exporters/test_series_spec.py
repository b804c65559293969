"""Time-series models (main input `past_values`): layout, length and extra inputs read generically."""

from __future__ import annotations

import onnx
import pytest
import torch

from tracefuse import api
from tracefuse.errors import ExportError
from tracefuse.exporters.series_spec import series_fields
from tracefuse.exporters.sources import load_source


def _graph_inputs(result) -> dict[str, tuple]:
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    return {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}


@pytest.mark.parametrize(("model_type", "expected"), [
    # lagged forecaster: context (4, from the horizon the shrink sets) + its largest lag (7), with covariates
    # and an observed mask of the same length
    ("time_series_transformer", {"past_values": ("batch", 11), "past_time_features": ("batch", 11, 0),
                                 "past_observed_mask": ("batch", 11)}),
    # patches of the configured context: [batch, 32 steps, 1 channel], batch the only dynamic axis
    ("patchtst", {"past_values": ("batch", 32, 1)}),
    # any length: padding and frequency inputs it requires, the length axis dynamic
    ("timesfm", {"past_values": ("batch", "length"), "past_values_padding": ("batch", "length"),
                 "freq": ("batch", 1)}),
])
def test_time_series_models_validate_at_two_shapes(tmp_path, model_type, expected):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    assert _graph_inputs(result) == expected


def test_a_required_input_it_cannot_generate_is_named():
    loaded = load_source("tiny:patchtst")

    class Forecaster(torch.nn.Module):
        def forward(self, past_values, weather_forecast):
            return past_values

    with pytest.raises(ExportError) as info:
        series_fields(Forecaster(), loaded.config, "made_up")
    assert "'weather_forecast'" in str(info.value) and "made_up" in str(info.value)


def test_a_model_that_fails_on_the_window_is_a_clear_error():
    loaded = load_source("tiny:patchtst")

    class Broken(torch.nn.Module):
        def forward(self, past_values):
            raise ValueError("context is too short")

    with pytest.raises(ExportError) as info:
        series_fields(Broken(), loaded.config, "made_up")
    assert "32 steps" in str(info.value) and "context is too short" in str(info.value)
