"""tiny: relations a config derives from its widths survive the shrink (group counts, ratio pairs, width lists
built from the hidden width, a coefficient-multiplied head width, latent-attention head sizes, a derived size
that would vanish), and the shrunk models build and run."""

from __future__ import annotations

import pytest
import torch

from tracefuse.exporters.tiny import HIDDEN, tiny_config, vanished_sizes
from tracefuse.exporters.tiny_ties import width_list_ties


class _Config:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_width_lists_that_end_at_or_sum_to_the_hidden_width_are_scaled_with_it():
    default = _Config(hidden_size=256, out_features=[64, 64, 128, 256], axial_pos_embds_dim=[64, 192],
                      conv_kernel=[3, 5], layer_dims=[10, 20])
    ties = width_list_ties(default, {"hidden_size": 32})
    assert ties["out_features"] == [8, 8, 16, 32]  # ends at the hidden width
    assert ties["axial_pos_embds_dim"] == [8, 24] and sum(ties["axial_pos_embds_dim"]) == 32  # sums to it
    assert "conv_kernel" not in ties and "layer_dims" not in ties  # neither ends at nor sums to 256
    assert width_list_ties(default, {}) == {}  # no width shrunk: nothing follows


def test_a_derived_size_that_falls_below_two_is_reported():
    default = _Config(hidden_size=768, dim_bbox_sinusoid_emb_1d=24, num_labels=2, pad_token_id=0)
    shrunk = _Config(hidden_size=32, dim_bbox_sinusoid_emb_1d=1, num_labels=2, pad_token_id=0)
    assert vanished_sizes(default, shrunk, {"hidden_size": 32}) == ["dim_bbox_sinusoid_emb_1d"]
    assert vanished_sizes(default, shrunk, {"hidden_size": 32, "dim_bbox_sinusoid_emb_1d": 1}) == []  # set, not derived


@pytest.mark.parametrize(("model_type", "check"), [
    # group normalization: 32 groups do not divide 16-channel stages; the count becomes a divisor of 8
    ("bit", lambda c: c.num_groups == 8 and all(w % c.num_groups == 0 for w in c.hidden_sizes)),
    # a pair of ratios (tokens, channels) is not cut with the stages
    ("groupvit", lambda c: len(c.vision_config.assign_mlp_ratio) == 2 and len(c.vision_config.depths) == 2),
    # the axial position parts concatenate to the hidden width
    ("reformer", lambda c: sum(c.axial_pos_embds_dim) == c.hidden_size == HIDDEN),
    # the last stage's width is the hidden width
    ("efficientloftr", lambda c: c.out_features[-1] == c.hidden_size == HIDDEN),
    # windows per image fit the shrunk image: image / windows is a multiple of the windows per side
    ("lw_detr", lambda c: c.backbone_config.num_windows == 4),
    # the head width the default stated already multiplied by the width coefficient (2560 = 1280 x 2.0)
    ("efficientnet", lambda c: c.width_coefficient == 1.0 and c.hidden_dim == 1280),
    # a partial-rotary latent attention: head_dim is the whole query head, the rotary part half of it
    ("mistral4", lambda c: c.head_dim == c.qk_nope_head_dim + c.qk_rope_head_dim
     and c.head_dim * c.rope_parameters["partial_rotary_factor"] == c.qk_rope_head_dim),
    # a latent attention with no rotary part (qk_rope_head_dim 0) and head_dim 0: the parts the default sized
    # are shrunk, the ones it left at 0 stay 0 (they were all shrunk to 0, and the model did not build)
    ("glm5_next_text", lambda c: c.qk_nope_head_dim == c.v_head_dim == c.qk_head_dim > 0
     and c.qk_rope_head_dim == 0 == c.head_dim and c.kv_lora_rank > 0),
    # hidden / 4 / dim_bbox sinusoid frequencies: width 32 leaves none, so the width doubles until some remain
    ("bros", lambda c: c.dim_bbox_sinusoid_emb_1d >= 2 and c.hidden_size > HIDDEN),
])
def test_derived_relations_hold_and_the_model_runs(model_type, check):
    from transformers import AutoModel

    config = tiny_config(model_type)
    assert check(config)
    if model_type in ("lw_detr", "efficientloftr"):
        return  # their default configs build no runnable model in Transformers (no projector levels; rotary width)
    model = AutoModel.from_config(config).eval()
    assert sum(p.numel() for p in model.parameters()) < 30_000_000


def test_the_shrunk_bit_and_efficientnet_run_on_an_image():
    from transformers import AutoModel

    for model_type in ("bit", "efficientnet"):
        model = AutoModel.from_config(tiny_config(model_type)).eval()
        with torch.no_grad():
            out = model(pixel_values=torch.randn(1, 3, 32, 32))
        assert torch.isfinite(out.last_hidden_state).all()
