"""qwen2-VL style vision-language models: one image's packed patches, text after its placeholders, and the
multimodal rotary positions (M-RoPE) and grid helpers computed outside the graph."""

from __future__ import annotations

import pytest

from tracefuse.errors import ExportError
from tracefuse.exporters.archspec import resolve_spec
from tracefuse.exporters.sources import load_source
from tracefuse.exporters.tiny import tiny_config
from tracefuse.grid_fill import derive
from tracefuse.jobs.coverage_probe import probe


def test_text_positions_count_on_from_the_image_s_larger_side():
    value = derive("grid_text_positions", {"spatial_merge_size": 2}, {"grid_h": 4, "grid_w": 8, "sequence": 11})
    assert value.shape == (3, 1, 11)
    # 2 x 4 merged image tokens at (0, row, col), then text from max(2, 4) = 4 on all three axes
    assert value[:, 0, :8].tolist() == [[0] * 8, [0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert value[:, 0, 8:].tolist() == [[4, 5, 6]] * 3


def test_spec_takes_positions_and_prefixed_grid_helpers():
    spec = resolve_spec(load_source("tiny:qwen2_vl"))
    names = spec.input_names
    assert names[:5] == ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "position_ids")
    assert all(n.startswith("image_") for n in names[5:]) and "image_position_ids" in names
    ids = spec.inputs[0]
    assert ids.shape == (1, "sequence") and len(ids.fill["prefix"]) == 8  # one 4 x 8 image, merged 2 x 2
    assert {s["sequence"] for s in spec.validation_shapes} == {24, 45}


def test_qwen2_vl_exports_and_validates_at_two_text_lengths(tmp_path):
    row = probe("qwen2_vl", "feature-extraction", tmp_path)
    assert row["status"] == "validated", row
    assert [c.split(",")[0] for c in row["cases"]] == ["sequence=24", "sequence=45"]


def test_a_model_with_another_position_rule_is_refused_with_the_reason():
    with pytest.raises(ExportError) as info:
        resolve_spec(load_source("tiny:glm_image"))
    assert "rotary positions follow another rule" in str(info.value)


def test_a_tower_projects_onto_the_text_width_where_the_defaults_disagree():
    config = tiny_config("qwen3_vl")  # default: the tower projects to 3584, the text model is 4096 wide
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size


def test_a_packed_patch_model_without_m_rope_takes_no_positions():
    spec = resolve_spec(load_source("tiny:lfm3_vl"))  # it counts text positions itself
    assert "position_ids" not in spec.input_names
    assert spec.input_names[:4] == ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")
