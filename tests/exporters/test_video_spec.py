"""Video models (main input `pixel_values_videos`): clip found by running the model, text added when required."""

from __future__ import annotations

import onnx
import pytest
import torch

from tracefuse import api
from tracefuse.errors import ExportError
from tracefuse.exporters.sources import load_source
from tracefuse.exporters.video_spec import video_input


def _graph_inputs(result) -> dict[str, tuple]:
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    return {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}


@pytest.mark.parametrize(("model_type", "expected"), [
    # a 4-frame clip at the default size (its config declares 64 frames of a 256-pixel crop: any clip runs)
    ("vjepa2", {"pixel_values_videos": ("batch", 4, 3, 64, 64)}),
    # video-text: the forward requires input_ids, which keep their batch and sequence axes; a position per
    # frame: the 4-frame clip fails, the config's 16 frames run
    ("videoprism", {"input_ids": ("batch", "sequence"), "pixel_values_videos": ("batch", 16, 3, 32, 32)}),
])
def test_video_models_validate_at_two_shapes(tmp_path, model_type, expected):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction",
                        exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    assert {k: v for k, v in _graph_inputs(result).items() if k in expected} == expected


def test_the_configs_frame_count_is_tried_when_a_short_clip_fails():
    config = load_source("tiny:videoprism_vision_model").config

    class Positions(torch.nn.Module):  # a position per frame: only the config's count runs
        def forward(self, pixel_values_videos):
            assert pixel_values_videos.shape[1] == config.num_frames, "one position per frame"
            return pixel_values_videos.mean()

    spec = video_input(Positions(), config, "made_up")
    assert spec.shape == ("batch", config.num_frames, 3, 32, 32) and config.num_frames != 4


def test_a_model_that_fails_on_every_clip_names_each_try():
    config = load_source("tiny:videoprism_vision_model").config

    class Broken(torch.nn.Module):
        def forward(self, pixel_values_videos):
            raise ValueError("needs a tracker state")

    with pytest.raises(ExportError) as info:
        video_input(Broken(), config, "made_up")
    text = str(info.value)
    assert "4 frames of 32x32" in text and f"{config.num_frames} frames" in text and "tracker state" in text
