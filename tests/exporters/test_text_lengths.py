"""Text validation lengths stay within a short position table (owlvit's text tower has 16 positions)."""

from __future__ import annotations

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.exporters.text_spec import text_shapes

_IDS = (TensorSpec("input_ids", "int64", ("batch", "sequence"), {"kind": "int", "low": 0, "high": 9}),)


def test_lengths_are_bounded_by_the_position_table():
    trace, shapes = text_shapes(_IDS, positions=16)
    assert [s["sequence"] for s in shapes] == [8, 16] and trace["sequence"] == 9
    _, usual = text_shapes(_IDS, positions=512)  # a long table changes nothing
    assert [s["sequence"] for s in usual] == [16, 37]


def test_owlvit_validates_at_two_lengths_within_its_positions(tmp_path):
    result = api.export("tiny:owlvit", tmp_path / "owlvit", task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert [c["name"] for c in result.report["cases"]] == ["batch=1,sequence=8", "batch=3,sequence=16"]
