"""Inputs a model reads as Python numbers (`image_sizes` of pixtral-based VLMs) are constants of the graph:
traced as plain lists, recorded in the manifest, and given to the PyTorch reference again on validation."""

from __future__ import annotations

import onnx

from tracefuse import api
from tracefuse.exporters.archspec import constant_values, resolve_spec
from tracefuse.exporters.media_spec import anyres_patches, merged_patch_size
from tracefuse.exporters.naflex_spec import GRID
from tracefuse.exporters.sources import load_source


def test_image_sizes_become_constants_and_fix_the_batch():
    spec = resolve_spec(load_source("tiny:mistral3"))
    assert "image_sizes" not in spec.input_names
    assert [t.name for t in spec.constant_inputs] == ["image_sizes"]
    pixels = next(t for t in spec.inputs if t.name == "pixel_values")
    batch = spec.trace_shape["batch"]
    assert pixels.shape[0] == batch  # one row of image_sizes per image: the batch is fixed
    side = pixels.shape[-1]
    assert constant_values(spec) == {"image_sizes": [[side, side]] * batch}
    assert len({shape["sequence"] for shape in spec.validation_shapes}) == 2  # the text length stays dynamic


def test_merged_patch_size_holds_whole_merged_patches():
    config = load_source("tiny:mistral3").config  # patch 14, merge 2: a 32 px image is rounded to 56
    size = merged_patch_size(config)
    unit = config.vision_config.patch_size * config.spatial_merge_size
    assert size % unit == 0 and size // unit >= 2


def test_a_model_with_constant_image_sizes_validates_and_revalidates_from_its_manifest(tmp_path):
    result = api.export("tiny:mistral3", tmp_path / "m", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    constants = result.artifact.manifest.export["constants"]
    assert list(constants) == ["image_sizes"] and len(constants["image_sizes"]) == 2
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    assert "image_sizes" not in {i.name for i in graph.input}
    again = api.validate(tmp_path / "m")  # the reference is called with the recorded constants
    assert again["passed"], again


def test_a_naflex_vision_encoder_takes_flattened_patches_with_a_constant_grid(tmp_path):
    result = api.export("tiny:siglip2_vision_model", tmp_path / "s", exporter="dynamo")
    assert result.report is not None and result.report["passed"], result.report
    patches = {case["inputs"]["pixel_values"][1] for case in result.report["cases"]}
    assert len(patches) == 2  # validated at two patch counts: the patch axis is dynamic
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    dims = {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}
    assert dims["pixel_values"][1:] == ("patches", 3 * 16 * 16) and dims["pixel_attention_mask"][1] == "patches"
    assert "spatial_shapes" not in dims
    assert result.artifact.manifest.export["constants"] == {"spatial_shapes": [[GRID, GRID]] * dims["pixel_values"][0]}


def test_an_any_resolution_model_gets_its_crops_and_image_sizes():
    spec = resolve_spec(load_source("tiny:llava_next"))
    config = load_source("tiny:llava_next").config
    side = config.vision_config.image_size
    assert all(v % side == 0 for point in config.image_grid_pinpoints for v in point)  # scaled with the tower
    pixels = next(t for t in spec.inputs if t.name == "pixel_values")
    assert pixels.shape[1] == anyres_patches(config) > 1  # the whole image plus its crops
    assert constant_values(spec)["image_sizes"] == [[side, side]] * spec.trace_shape["batch"]
