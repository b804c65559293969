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
