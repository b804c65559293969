"""Document models get layout boxes beside their token ids, in the coordinates their forward accepts; text
models get the other inputs their config sizes (a language per row, region features)."""

from __future__ import annotations

import numpy as np

from tracefuse.exporters.archspec import resolve_spec
from tracefuse.exporters.sources import load_source
from tracefuse.jobs.coverage_probe import probe
from tracefuse.validation.inputs import boxes, generate_inputs


def test_boxes_are_ordered_and_inside_the_page():
    rng = np.random.default_rng(0)
    four = boxes(rng, (2, 5, 4), 1000.0)
    assert (four[..., 0] <= four[..., 2]).all() and (four[..., 1] <= four[..., 3]).all()
    assert four.min() >= 0 and four.max() <= 1000 and np.array_equal(four, np.round(four))
    quad = boxes(rng, (1, 3, 8), 1.0)  # the corners clockwise: x0 y0, x1 y0, x1 y1, x0 y1
    assert np.array_equal(quad[..., 1], quad[..., 3]) and np.array_equal(quad[..., 0], quad[..., 6])
    assert quad.max() <= 1.0


def test_integer_boxes_for_position_tables_and_fractions_for_sinusoids():
    layoutlm = {t.name: t for t in resolve_spec(load_source("tiny:layoutlm")).inputs}
    assert layoutlm["bbox"].dtype == "int64" and layoutlm["bbox"].shape == ("batch", "sequence", 4)
    udop = {t.name: t for t in resolve_spec(load_source("tiny:udop")).inputs}
    assert udop["bbox"].dtype == "float32" and udop["bbox"].fill["scale"] == 1.0  # fractions of the page
    feeds = generate_inputs(tuple(udop.values()), {"batch": 2, "sequence": 5, "decoder_sequence": 3})
    assert feeds["bbox"].shape == (2, 5, 4) and feeds["bbox"].max() <= 1.0


def test_a_model_that_requires_boxes_validates(tmp_path):
    row = probe("udop", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row


def test_side_inputs_a_text_config_sizes():
    xmod = {t.name: t for t in resolve_spec(load_source("tiny:xmod")).inputs}  # one adapter per language
    languages = load_source("tiny:xmod").config.languages
    assert xmod["lang_ids"].shape == ("batch",) and xmod["lang_ids"].fill["high"] == len(languages)
    lxmert = {t.name: t for t in resolve_spec(load_source("tiny:lxmert")).inputs}
    config = load_source("tiny:lxmert").config  # visual_feats / visual_pos sized by visual_feat_dim / _pos_dim
    assert lxmert["visual_feats"].shape[-1] == config.visual_feat_dim
    assert lxmert["visual_pos"].shape[-1] == config.visual_pos_dim
