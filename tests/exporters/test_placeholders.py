"""Text-first multimodal models whose input_ids must hold one placeholder token per image feature."""

from __future__ import annotations

import numpy as np

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.exporters.tiny import VOCAB, tiny_config
from tracefuse.validation.inputs import generate_inputs


def test_generated_ids_start_with_the_prefix_and_stay_below_high():
    spec = TensorSpec("input_ids", "int64", ("batch", "sequence"), {"kind": "int", "low": 0, "high": 50,
                                                                      "prefix": [77, 77, 77]})
    ids = generate_inputs([spec], {"batch": 3, "sequence": 10})["input_ids"]
    assert ids.shape == (3, 10)
    assert (ids[:, :3] == 77).all() and (ids[:, 3:] < 50).all()


def test_placeholder_ids_move_inside_the_shrunk_vocabulary():
    config = tiny_config("ovis2")  # its default image token id (151665) lies far beyond a tiny vocabulary
    assert config.image_token_id < VOCAB


def test_image_placeholders_make_a_llava_style_model_validate(tmp_path):
    # dynamo stops on the data-dependent placeholder scatter; the TorchScript exporter (coverage's fallback) traces it
    result = api.export("tiny:ovis2", tmp_path / "ovis2", task="feature-extraction", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    ids = next(s for s in result.artifact.manifest.inputs if s.name == "input_ids")
    prefix = ids.fill["prefix"]
    assert len(prefix) > 0 and set(prefix) == {tiny_config("ovis2").image_token_id}
    lengths = [int(c["name"].split("sequence=")[1]) for c in result.report["cases"]]
    assert all(n > len(prefix) for n in lengths) and len(set(lengths)) == 2
    assert np.all(np.asarray(prefix) >= ids.fill["high"])  # random text ids never hit a placeholder


def test_a_count_reported_as_rows_times_width_is_checked_against_the_model():
    # llava's check reports "features: 128" for 4 feature rows of width 32; one 32x32 image through a 14-pixel
    # patch ViT gives 2 x 2 patch features (the CLS row dropped): 4 placeholders
    from tracefuse.exporters.archspec import resolve_spec
    from tracefuse.exporters.sources import load_source

    loaded = load_source("tiny:llava", "feature-extraction")
    patches = (loaded.config.vision_config.image_size // loaded.config.vision_config.patch_size) ** 2
    spec = resolve_spec(loaded)
    assert len(spec.inputs[0].fill["prefix"]) == patches == 4


def test_a_q_former_model_gets_an_image_token_and_one_placeholder_per_query(tmp_path):
    from tracefuse.exporters.archspec import resolve_spec
    from tracefuse.exporters.sources import load_source
    from tracefuse.exporters.tiny import tiny_config

    config = tiny_config("blip-2")  # the default leaves image_token_index to the processor
    assert isinstance(config.image_token_index, int) and config.image_token_index < config.text_config.vocab_size
    ids = resolve_spec(load_source("tiny:blip-2")).inputs[0]
    assert ids.fill["prefix"] == [config.image_token_index] * config.num_query_tokens
    assert ids.fill["high"] <= config.image_token_index  # random text ids never hit a placeholder
