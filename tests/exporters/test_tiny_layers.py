"""tiny: heterogeneous layers (`per_layer_config`) are renumbered and shrunk with the layers they belong to, and
per-layer lists of head counts are cut with the layers, not shrunk like the stages of a vision model."""

from __future__ import annotations

from tracefuse.exporters.tiny import tiny_config
from tracefuse.exporters.tiny_layers import layer_kinds, renumbered, shrunk_overrides


class _Config:
    def __init__(self):
        self.head_dim = 256
        self.num_key_value_heads = 4
        self.sliding_window = 512


def test_overriding_layers_are_a_kind_of_their_own():
    kinds = ["sliding", "sliding", "sliding", "full"]
    folded = layer_kinds(kinds, {1: {"head_dim": 512}, 2: {"head_dim": 384}})
    assert folded[0] != folded[1] and folded[1] == folded[2]  # the overridden names count, not their values
    assert layer_kinds(kinds, {}) == kinds


def test_overrides_are_renumbered_and_follow_the_global_shrink():
    overrides = renumbered({5: {"head_dim": 512}, 11: {"head_dim": 512}, 7: {"sliding_window": None}}, [0, 5, 7])
    assert overrides == {1: {"head_dim": 512}, 2: {"sliding_window": None}}  # layer 11 was not kept
    merged = {"head_dim": 8, "num_key_value_heads": 2}
    shrunk = shrunk_overrides(_Config(), {1: {"head_dim": 512, "num_key_value_heads": 3, "sliding_window": 64}},
                              merged)
    # twice the global head size stays twice it; 3 of 4 heads is no whole ratio of 2, so it takes the global 2;
    # a field the shrink did not change globally is kept
    assert shrunk == {"1": {"head_dim": 16, "num_key_value_heads": 2, "sliding_window": 64}}


def test_real_heterogeneous_configs_build():
    gemma = tiny_config("gemma4_text")
    assert gemma.num_hidden_layers == 2
    assert len(set(gemma.layer_types)) == 2  # the full-attention layer, which overrides its head size, is kept
    (layer, fields), = gemma.to_dict()["per_layer_config"].items()
    assert gemma.layer_types[int(layer)] == "full_attention"
    assert fields["head_dim"] == 2 * vars(gemma)["head_dim"]
    # reading a per-layer field globally raises in transformers; the shrink reads the stored global value
    tiny_config("embedding_gemma2_text")


def test_per_layer_head_counts_are_cut_with_the_layers():
    laguna = tiny_config("laguna")
    assert len(laguna.num_attention_heads_per_layer) == laguna.num_hidden_layers == 2
    assert max(laguna.num_attention_heads_per_layer) <= laguna.num_attention_heads


def test_a_repeated_pattern_of_layer_kinds_keeps_each_kind():
    gemma = tiny_config("recurrent_gemma")  # block_types: recurrent, recurrent, attention, over 26 layers
    assert gemma.num_hidden_layers == 3
    assert {gemma.block_types[i % len(gemma.block_types)] for i in range(gemma.num_hidden_layers)} == {
        "recurrent", "attention"}  # the pattern repeats over the layers: the third one is attention
