"""tiny: fields a default config leaves unset (None, for the checkpoint to fill) get small values; fields that
index or count parts of the shrunk model stay inside it."""

from __future__ import annotations

from tracefuse.exporters.tiny import HEADS, VOCAB, tiny_config
from tracefuse.exporters.tiny_experts import EXPERTS, PER_TOKEN, expert_kwargs
from tracefuse.jobs.coverage_probe import probe


def test_unset_heads_vocabulary_and_special_tokens_are_filled():
    assert tiny_config("nemotron").num_key_value_heads == HEADS // 2
    esm = tiny_config("esm")
    assert esm.vocab_size == VOCAB and 0 < esm.pad_token_id < VOCAB and 0 < esm.mask_token_id < VOCAB


def test_unset_expert_counts_are_filled_unless_a_switch_says_dense():
    dots1 = tiny_config("dots1")
    assert (dots1.n_routed_experts, dots1.num_experts_per_tok, dots1.n_shared_experts) == (EXPERTS, PER_TOKEN, 1)
    assert tiny_config("gemma4_text").num_experts is None  # enable_moe_block=False: the default is dense
    fields = {"num_experts": None, "top_k_experts": None, "moe_intermediate_size": None}
    assert expert_kwargs(fields, 64) == {"num_experts": EXPERTS, "top_k_experts": PER_TOKEN,
                                         "moe_intermediate_size": 64}
    assert expert_kwargs({**fields, "enable_moe_block": False}, 64) == {}
    assert expert_kwargs({"hidden_size": 32}, 64) == {}  # no expert fields at all


def test_a_config_with_unset_key_value_heads_builds_and_validates(tmp_path):
    row = probe("nemotron", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row


def test_a_config_that_refuses_grouped_query_attention_keeps_one_kv_head_per_query_head():
    config = tiny_config("esmc")  # its validator: num_key_value_heads must equal num_attention_heads
    assert config.num_key_value_heads == config.num_attention_heads
    assert tiny_config("llama").num_key_value_heads == HEADS // 2  # configs that allow it keep grouping


def test_multi_head_attention_outside_text_decoders_stays_multi_head():
    # its default has one KV head per query head, and its value projection uses the query head count
    audio = tiny_config("nemotron3_diarization_audio")
    assert audio.num_key_value_heads == audio.num_attention_heads == HEADS
    assert tiny_config("mistral").num_key_value_heads == HEADS // 2  # a grouped default stays grouped
    assert tiny_config("llama").num_key_value_heads == HEADS // 2  # a text decoder: grouped, for its tests


def test_an_audio_encoder_with_multi_head_defaults_validates(tmp_path):
    row = probe("nemotron3_diarization_audio", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row


def test_a_ctc_blank_is_a_class_of_the_shrunk_vocabulary():
    config = tiny_config("nemotron3_5_transcribe_word_timestamp")  # default blank_token_id 23862
    assert config.blank_token_id < VOCAB


def test_vision_feature_layers_are_clamped_into_the_shrunk_tower():
    config = tiny_config("vipllava")  # default [-2, -5, -8, -11, 6] of a 24-layer tower
    layers = config.vision_config.num_hidden_layers
    assert len(config.vision_feature_layers) == 5  # the projector is sized by the count
    assert all(-(layers + 1) <= i <= layers for i in config.vision_feature_layers)
    assert tiny_config("llava").vision_feature_layer == -2  # already inside: unchanged
