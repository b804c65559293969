"""Image models that need more than the default image: text ids beside it, or a larger image."""

from __future__ import annotations

import onnx
import torch

from tracefuse import api
from tracefuse.exporters.archspec import resolve_spec
from tracefuse.exporters.media_spec import DEFAULT_IMAGE, LARGER_IMAGES, runnable_image_size
from tracefuse.exporters.sources import load_source


def test_an_image_model_that_fails_on_the_image_alone_gets_text_ids(tmp_path):
    # sam3 takes pixel_values first and raises "You must specify exactly one of input_ids or text_embeds"
    result = api.export("tiny:sam3", tmp_path / "sam3", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    names = [i.name for i in graph.input]
    assert names[0] == "input_ids" and "pixel_values" in names
    # its text tower has 32 positions: the validation lengths stay inside them
    assert [c["name"] for c in result.report["cases"]] == ["batch=1,sequence=16", "batch=3,sequence=32"]


class _OnePixelNorm(torch.nn.Module):
    """Fails like a detector whose last feature map is one pixel: a group norm with one value per group."""

    def forward(self, pixel_values):
        features = torch.nn.functional.avg_pool2d(pixel_values, 64)  # 64 px -> 1x1, 128 px -> 2x2
        return torch.nn.functional.group_norm(features, 3)


class _Config:
    num_channels = 3


def test_a_config_without_image_size_gets_the_first_size_the_model_runs_on():
    assert runnable_image_size(_OnePixelNorm(), _Config()) == 128
    assert runnable_image_size(torch.nn.Identity(), _Config()) == DEFAULT_IMAGE


def test_a_declared_image_size_is_kept_when_the_model_runs_on_it_or_on_nothing():
    class Declared(_Config):
        image_size = 48

    class Refuses(torch.nn.Module):
        def forward(self, pixel_values):
            raise AssertionError("fails at every size")

    assert runnable_image_size(torch.nn.Identity(), Declared()) == 48
    assert runnable_image_size(Refuses(), Declared()) == 48  # the export then reports the model's own error


def test_a_declared_image_size_too_small_for_the_network_grows():
    class Declared(_Config):
        image_size = 32

    class NeedsSixtyFour(torch.nn.Module):  # downsampling that outgrows the shrunk image (mobilevitv2)
        def forward(self, pixel_values):
            if pixel_values.shape[-1] < 64:
                raise RuntimeError("calculated shape of the array of sliding blocks as (0, 0)")
            return pixel_values

    assert runnable_image_size(NeedsSixtyFour(), Declared()) == 64


def test_deformable_detr_gets_a_128_pixel_image():
    # at 64 px its last level is 1x1 and a group norm over it fails for a single image
    spec = resolve_spec(load_source("tiny:deformable_detr"))
    assert spec.inputs[0].name == "pixel_values" and 128 in {spec.inputs[0].shape[-1],
                                                              *[s.get("width") for s in spec.validation_shapes]}


def test_a_required_side_tower_s_ids_get_an_axis_of_their_own(tmp_path):
    spec = resolve_spec(load_source("tiny:instructblip"))  # the Q-Former's instruction: qformer_input_ids
    by_name = {s.name: s for s in spec.inputs}
    assert by_name["qformer_input_ids"].shape == ("batch", "qformer_sequence")
    assert by_name["qformer_attention_mask"].shape == ("batch", "qformer_sequence")
    assert len({s["qformer_sequence"] for s in spec.validation_shapes}) == 2
    result = api.export("tiny:instructblip", tmp_path / "ib", exporter="torchscript")
    assert result.report["passed"], result.report
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}  # the towers' outputs, named by tower
    assert {"vision_outputs.last_hidden_state", "qformer_outputs.last_hidden_state"} <= outputs, outputs


def test_a_windowed_detector_that_runs_at_no_smaller_size_gets_512_pixels():
    # rf_detr: 14-pixel patches cut into 4 x 4 windows and 32 queries picked among the patches run at 512 px
    # and at none of 32, 64, 128, 256 (fewer patches than queries, or patches that do not split into windows)
    spec = resolve_spec(load_source("tiny:rf_detr"))
    assert 512 in LARGER_IMAGES and spec.inputs[0].name == "pixel_values" and spec.inputs[0].shape[-1] == 512
