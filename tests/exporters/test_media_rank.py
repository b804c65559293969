"""Media inputs with one more axis than usual (video clips, codec waveforms), found by asking the model."""

from __future__ import annotations

import onnx
import pytest

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.exporters.media_rank import extra_axis_size, wants_extra_axis, with_extra_axis


def _graph_inputs(result) -> dict[str, tuple]:
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    return {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}


@pytest.mark.parametrize(("model_type", "exporter", "name", "expected"), [
    ("videomae", "dynamo", "pixel_values", ("batch", 16, 3, 32, 32)),  # video: frames from num_frames
    ("dac", "dynamo", "input_values", ("batch", 1, "samples")),  # codec: [batch, channels, samples]
    # encodec's padding guards on the length under torch.export; the TorchScript exporter takes it
    ("encodec", "torchscript", "input_values", ("batch", 1, "samples")),
])
def test_models_that_want_one_more_axis_validate_at_two_shapes(tmp_path, model_type, exporter, name, expected):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction", exporter=exporter)
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    assert _graph_inputs(result)[name] == expected


class _Rank:
    """Unpacks its input like a video model: fails on 4-d tensors with Python's own message."""

    def __init__(self, fail_after: bool = False):
        self.fail_after = fail_after

    def __call__(self, pixel_values, **_):
        _batch, _frames, _channels, _height, _width = pixel_values.shape
        if self.fail_after:
            raise RuntimeError("image tokens do not match")
        return pixel_values


def test_the_extra_axis_is_kept_only_when_the_model_asks_for_it():
    assert wants_extra_axis(_Rank(), "pixel_values", (1, 3, 8, 8), 4)
    # a rank error first, then a different failure (a multimodal model asking for placeholders): kept
    assert wants_extra_axis(_Rank(fail_after=True), "pixel_values", (1, 3, 8, 8), 4)
    # a model that takes 4-d input is left alone
    assert not wants_extra_axis(lambda pixel_values: pixel_values, "pixel_values", (1, 3, 8, 8), 4)

    def always_fails(pixel_values):
        raise ValueError("broken for another reason")

    assert not wants_extra_axis(always_fails, "pixel_values", (1, 3, 8, 8), 4)


def test_axis_size_comes_from_the_config_and_is_inserted_after_batch():
    class Vision:
        num_frames = 6

    class Config:
        vision_config = Vision()

    class Audio:
        audio_channels = 2

    assert extra_axis_size(Config()) == 6
    assert extra_axis_size(Audio()) == 2
    assert extra_axis_size(object()) == 1
    spec = TensorSpec("pixel_values", "float32", ("batch", 3, 8, 8), {"kind": "normal"})
    assert with_extra_axis(spec, 6).shape == ("batch", 6, 3, 8, 8)


def test_a_vision_tower_without_its_declared_main_input_takes_pixel_values(tmp_path):
    # idefics3's vision tower inherits main_input_name "input_ids", but its forward takes only pixel_values
    result = api.export("tiny:idefics3_vision", tmp_path / "tower", task="feature-extraction",
                        exporter="transformers")
    assert result.report is not None and result.report["passed"], result.report
    assert list(_graph_inputs(result)) == ["pixel_values"]
