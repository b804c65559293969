"""The shrink leaves alone fields a config derives (read-only properties, setters that refuse)."""

from __future__ import annotations

from tracefuse import api
from tracefuse.exporters.text_spec import FALLBACK_VOCAB, vocab_size
from tracefuse.exporters.tiny import _settable, tiny_config


class _Codec:
    def __init__(self):
        self.sub_width = 512

    @property
    def hidden_size(self):  # derived from a sub-model, no setter
        return self.sub_width


class _Blocks:
    def __init__(self):
        self.block_sizes = [4, 4]

    @property
    def num_hidden_layers(self):
        return sum(self.block_sizes)

    @num_hidden_layers.setter
    def num_hidden_layers(self, value):
        raise NotImplementedError("set block_sizes")


class _Plain:
    def __init__(self):
        self.hidden_size = 768


def test_derived_fields_are_not_set_and_plain_ones_are():
    assert not _settable(_Codec(), "hidden_size", 32)
    assert not _settable(_Blocks(), "num_hidden_layers", 2)
    blocks = _Blocks()
    assert _settable(_Plain(), "hidden_size", 32) and blocks.num_hidden_layers == 8  # the probe set a copy


def test_configs_with_derived_fields_build_and_validate(tmp_path):
    # before: "property 'hidden_size' of 'XcodecConfig' object has no setter", prophetnet's NotImplementedError
    funnel = tiny_config("funnel")  # its layer count is derived from block_sizes, which are cut to 1 per block
    assert tiny_config("xcodec") is not None and funnel.num_hidden_layers == sum(funnel.block_sizes) == 3
    result = api.export("tiny:prophetnet", tmp_path / "prophetnet", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report


def test_token_ids_come_from_a_sub_config_or_a_byte_range_when_the_config_has_no_vocab_size():
    class Sub:
        def __init__(self, vocab):
            self.vocab_size = vocab

        def to_dict(self):
            return {"vocab_size": self.vocab_size}

    class Pair:
        def __init__(self):
            self.encoder_config, self.decoder_config = Sub(256), Sub(1028)

    assert vocab_size(Pair()) == 256  # ids valid for every embedding table
    assert vocab_size(Sub(1000)) == 1000
    assert vocab_size(object()) == FALLBACK_VOCAB
