"""Models whose main input holds vectors (`query_embeds`, `latents`, `inputs`): layout, width and axes found
generically by running the model on candidates (exporters.embeds_spec)."""

from __future__ import annotations

import types

import onnx
import pytest
import torch

from tracefuse import api
from tracefuse.errors import ExportError
from tracefuse.exporters.embeds_spec import declared_widths, is_vector_input, vector_fields


def _graph_inputs(result) -> dict[str, tuple]:
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    return {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}


def test_vector_input_names():
    for name in ("inputs_embeds", "query_embeds", "noise_embeds", "latents", "hidden_states", "inputs",
                 "context_hidden_states"):
        assert is_vector_input(name), name
    for name in ("input_ids", "pixel_values", "input_values", "attention_mask", None):
        assert not is_vector_input(name), name


def test_a_q_former_gets_query_vectors_and_the_features_it_cross_attends_to(tmp_path):
    result = api.export("tiny:blip_2_qformer", tmp_path / "qformer", task="feature-extraction",
                        exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    inputs = _graph_inputs(result)
    assert inputs["query_embeds"] == ("batch", "sequence", 32)  # its hidden_size
    assert inputs["encoder_hidden_states"][:2] == ("batch", "encoder_hidden_states_length")


class _ChannelsFirst(torch.nn.Module):
    """A codec-decoder-like module: latents [batch, 8, frames] through a 1-D convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 4, kernel_size=3)

    def forward(self, latents):
        return self.conv(latents)


def test_channels_first_vectors_of_a_declared_width_with_a_dynamic_length():
    config = types.SimpleNamespace(hidden_size=32, latent_dim=8)
    assert declared_widths(config) == [32, 8]
    fields = vector_fields(_ChannelsFirst(), config, "latents", "made_up")
    (spec,) = fields["inputs"]
    assert spec.shape == ("batch", 8, "sequence")
    lengths = [shape["sequence"] for shape in fields["validation_shapes"]]
    assert len(set(lengths)) == 2  # two lengths validated: the axis is proven dynamic


def test_no_width_that_runs_is_a_clear_error():
    config = types.SimpleNamespace(hidden_size=5)
    with pytest.raises(ExportError) as info:
        vector_fields(_ChannelsFirst(), config, "latents", "made_up")
    message = str(info.value)
    assert "widths [5]" in message and "channels first" in message and "channels last" in message
