"""tiny: configs whose own validation rejected the generic shrink (per-layer lists, head sizes, M-RoPE
sections, state-space heads) now build, and keep the relations their constructors check."""

from __future__ import annotations

import pytest

from tracefuse.exporters.tiny import tiny_config
from tracefuse.exporters.tiny_rules import _pick_layers, _scaled_sections


def test_layer_types_cut_to_the_layer_count_with_one_of_each_kind():
    config = tiny_config("gemma3_text")  # 5 sliding layers then 1 full, repeated, by default
    assert len(config.layer_types) == config.num_hidden_layers == 2
    assert set(config.layer_types) == {"sliding_attention", "full_attention"}


@pytest.mark.parametrize("model_type", ["gemma3", "qwen2_5_vl", "internvl", "llava_onevision", "zamba"])
def test_multimodal_and_hybrid_configs_build(model_type):
    config = tiny_config(model_type)
    text = config.get_text_config()
    assert text.num_hidden_layers <= 4
    if hasattr(text, "layer_types") and text.layer_types is not None:
        assert len(text.layer_types) == text.num_hidden_layers


def test_mrope_sections_sum_to_half_the_head():
    from transformers import AutoConfig

    default = AutoConfig.for_model("cosmos3_edge_text")  # its default config has M-RoPE sections
    assert sum(default.rope_parameters["mrope_section"]) == default.head_dim // 2
    text = tiny_config("cosmos3_edge_text")
    assert text.head_dim < default.head_dim
    section = text.rope_parameters["mrope_section"]
    assert sum(section) == text.head_dim // 2 and min(section) >= 1


def test_state_space_heads_divide_the_inner_width():
    config = tiny_config("bamba")
    assert (config.mamba_expand * config.hidden_size) % config.mamba_n_heads == 0


def test_a_pure_state_space_config_keeps_heads_times_head_size_at_the_inner_width():
    config = tiny_config("mamba2")  # its constructor checks hidden_size * expand == num_heads * head_dim
    assert config.expand * config.hidden_size == config.num_heads * config.head_dim
    assert config.num_heads % config.n_groups == 0


def test_helpers():
    assert _pick_layers(["s", "s", "s", "f", "s", "f"], 2) == [0, 3]
    assert _pick_layers([None] * 12, 2) == [0, 1]
    assert _pick_layers(["a", "b", "c", "a"], 2) == [0, 1, 2]  # one of each kind, even past the count
    assert sum(_scaled_sections([16, 24, 24], 4)) == 4
    assert all(s >= 1 for s in _scaled_sections([16, 24, 24], 4))


def test_mrope_sections_stated_when_the_default_config_omits_them():
    from transformers import AutoConfig

    assert "mrope_section" not in AutoConfig.for_model("glm4v_text").rope_parameters  # the model's built-in
    text = tiny_config("glm4v_text")  # default ([8, 12, 12]) is sized for a 64-wide head
    head = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head // 2


@pytest.mark.parametrize("model_type", ["deepseek_v3", "minicpm3"])
def test_latent_attention_head_sizes_shrink_together_and_validate(tmp_path, model_type):
    from transformers import AutoConfig

    from tracefuse import api

    default = AutoConfig.for_model(model_type)
    config = tiny_config(model_type)
    assert config.qk_rope_head_dim < default.qk_rope_head_dim and config.kv_lora_rank < default.kv_lora_rank
    assert config.head_dim == config.qk_rope_head_dim  # the rotary embedding is sized by head_dim
    assert config.num_key_value_heads == config.num_attention_heads  # MLA: one KV head per query head
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) >= 2


def test_an_unset_expert_count_gets_a_small_one():
    config = tiny_config("deepseek_v2")  # its default config leaves num_experts_per_tok None
    assert isinstance(config.num_experts_per_tok, int) and 1 <= config.num_experts_per_tok <= config.n_routed_experts


def test_a_head_dim_left_none_becomes_hidden_over_heads():
    # ministral's default config sets head_dim=None; its attention reads getattr(config, "head_dim", ...) -> None
    config = tiny_config("ministral")
    assert config.head_dim == config.hidden_size // config.num_attention_heads


def test_hybrid_layer_kinds_keep_an_attention_layer():
    # jamba marks attention layers by period/offset (layer i when i % 8 == 4): with 2 layers the offset moves to 1
    jamba = tiny_config("jamba")
    assert jamba.attn_layer_offset == jamba.num_hidden_layers - 1
    assert "attention" in jamba.layers_block_type
    # zamba2 lists its kinds in layers_block_type (no layer_types): one of each kind is kept
    zamba2 = tiny_config("zamba2")
    assert set(zamba2.layers_block_type) == {"linear_attention", "hybrid"}


def test_a_hybrid_with_an_attention_layer_validates(tmp_path):
    from tracefuse import api

    result = api.export("tiny:zamba2", tmp_path / "zamba2", task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2


def test_partial_rotary_mrope_sections_fit_the_rotary_part():
    config = tiny_config("glm4v_moe_text")  # M-RoPE over half of each head (partial_rotary_factor 0.5)
    rope = config.rope_parameters
    rotary = int(config.head_dim * rope["partial_rotary_factor"])
    assert sum(rope["mrope_section"]) == rotary // 2 and min(rope["mrope_section"]) >= 1
    assert config.head_dim > config.hidden_size // config.num_attention_heads  # widened: 8 x 0.5 holds 2 pairs


def test_shared_cache_layers_and_pooling_stages_stay_below_the_shrunk_counts():
    gemma = tiny_config("gemma3n_text")  # by default the last 15 of 35 layers reuse earlier layers' caches
    assert gemma.num_kv_shared_layers <= gemma.num_hidden_layers - len(set(gemma.layer_types))
    hiera = tiny_config("hiera")  # its validator: num_query_pool < the number of stages
    assert hiera.num_query_pool < len(hiera.depths)
