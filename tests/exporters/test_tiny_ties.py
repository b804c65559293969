"""tiny: a width repeated in another nested config (an encoder's output width, a head's input width) follows the
shrink of the width it equals, so the config's own cross-checks still hold."""

from __future__ import annotations

from tracefuse.exporters.tiny import HIDDEN, tiny_config
from tracefuse.exporters.tiny_ties import list_end_ties, width_tie_kwargs


class _Sub:
    def __init__(self, **fields):
        self.__dict__.update(fields)

    def to_dict(self):
        return {k: (v.to_dict() if isinstance(v, _Sub) else v) for k, v in self.__dict__.items()}


def _default():
    return _Sub(
        text_config=_Sub(hidden_size=2048, head_dim=128, intermediate_size=8192),
        audio_config=_Sub(hidden_size=512, out_hidden_size=2048, head_dim=64, conv_dim=2048),
        head_config=_Sub(audio_hidden_size=512, condition_dim=2048, latent_dim=2048, projection_dim=300),
    )


def test_a_width_named_elsewhere_follows_the_width_it_equals():
    default = _default()
    shrink = {"text_config": {**default.text_config.to_dict(), "hidden_size": 32, "head_dim": 8},
              "audio_config": {**default.audio_config.to_dict(), "hidden_size": 16}}
    ties = width_tie_kwargs(default, shrink)
    assert ties["audio_config"]["out_hidden_size"] == 32  # equal to the text width: follows it
    assert ties["audio_config"]["hidden_size"] == 16  # a nested config comes back whole, its shrink kept
    assert ties["head_config"]["audio_hidden_size"] == 16 and ties["head_config"]["condition_dim"] == 32
    assert ties["head_config"]["latent_dim"] == 2048 and ties["head_config"]["projection_dim"] == 300
    # head, convolution and latent sizes are not widths, even when their default value matches one
    assert ties["audio_config"]["conv_dim"] == 2048 and ties["audio_config"]["head_dim"] == 64


def test_nothing_changes_when_no_width_was_shrunk():
    assert width_tie_kwargs(_default(), {}) == {}


def test_real_configs_keep_their_cross_checks():
    # each of these raised in its constructor before the rule: "... must match/equal ... hidden_size (32)"
    docling = tiny_config("granite_docling")
    assert docling.vision_config.out_hidden_size == docling.text_config.hidden_size == HIDDEN
    tts = tiny_config("pocket_tts")
    assert tts.flow_head_config.condition_dim == tts.hidden_size == HIDDEN


def test_a_detector_reads_the_stages_of_its_backbone_at_their_new_widths():
    config = tiny_config("rt_detr")
    backbone = config.backbone_config
    # the detector reads three feature levels (stages 2-4): the backbone keeps its stages up to the last one
    assert backbone.out_indices == [2, 3, 4] and len(backbone.depths) == 4
    assert list(config.encoder_in_channels) == [backbone.hidden_sizes[i - 1] for i in backbone.out_indices]
    assert list(config.decoder_in_channels) == [config.d_model] * 3  # made of its own hidden width
    assert config.num_queries <= 32  # fewer than the anchors of a small image


def test_a_backbone_with_one_output_is_still_cut_to_two_stages():
    backbone = tiny_config("detr").backbone_config
    assert len(backbone.depths) == 2 and backbone.out_features == ["stage2"]


def test_a_hidden_width_equal_to_the_first_stage_width_follows_it():
    backbone = tiny_config("sam2_vision_model").backbone_config  # hiera: hidden_size is stage 1's width
    assert backbone.hidden_size == backbone.embed_dim_per_stage[0]
    assert backbone.embed_dim_per_stage[0] < 96  # shrunk from the default


def test_a_nested_neck_list_follows_its_backbone_stage_widths():
    vision = tiny_config("sam2_vision_model")  # the neck reads the stages deepest first
    assert vision.backbone_channel_list == list(reversed(vision.backbone_config.embed_dim_per_stage))


def test_list_end_ties_leave_a_list_of_one_repeated_width_alone():
    class Config:
        hidden_size = 256
        decoder_in_channels = [256, 256, 256]  # made of the hidden width: the other direction

    assert list_end_ties(Config(), {"hidden_size": 32, "decoder_in_channels": [16, 16, 16]}) == {}
