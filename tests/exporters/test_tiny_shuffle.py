"""tiny: a vision tower keeps as many patches a side as its connector's pixel shuffle merges."""

from __future__ import annotations

import pytest

from tracefuse.exporters.tiny import IMAGE, tiny_config
from tracefuse.jobs.coverage_probe import probe


@pytest.mark.parametrize(("model_type", "factor_field"), [("idefics3", "scale_factor"),
                                                          ("modernvbert", "pixel_shuffle_factor")])
def test_a_shuffled_vision_tower_keeps_a_factor_of_patches_a_side(model_type, factor_field):
    config = tiny_config(model_type)
    vision, factor = config.vision_config, getattr(config, factor_field)
    assert factor > 1 and vision.patch_size > IMAGE // factor  # the default 32 px image would be too small
    assert vision.image_size // vision.patch_size == factor


def test_a_vision_tower_with_its_own_shuffle_factor_validates(tmp_path):
    config = tiny_config("granite_docling_vision")
    assert config.image_size // config.patch_size == config.scale_factor == 4
    row = probe("granite_docling_vision", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row


def test_configs_without_a_shuffle_keep_the_default_image():
    assert tiny_config("clip").vision_config.image_size == IMAGE  # clip's 32 px patch: one patch, unchanged
