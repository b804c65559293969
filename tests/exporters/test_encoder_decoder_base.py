"""An encoder-decoder's base model (feature-extraction) exports with its own decoder input and axis.

T5-style base models have no default decoder input (BART-style ones shift input_ids), so the text spec gives
every encoder-decoder a `decoder_input_ids` on an axis independent of the encoder's sequence.
"""

from __future__ import annotations

import onnx
import pytest

from tracefuse import api


def _dims(value_info) -> tuple:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


@pytest.mark.parametrize("model_type", ["t5", "pegasus"])
def test_base_encoder_decoder_validates_at_two_decoder_lengths(tmp_path, model_type):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction")
    report = result.report
    assert report is not None and report["passed"], report
    names = [case["name"] for case in report["cases"]]
    assert len(names) == 2 and all("decoder_sequence=" in n for n in names)
    assert names[0].split("decoder_sequence=")[1] != names[1].split("decoder_sequence=")[1]  # two lengths
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    inputs = {i.name: _dims(i) for i in graph.input}
    assert inputs["decoder_input_ids"] == ("batch", "decoder_sequence")
    assert inputs["input_ids"] == ("batch", "sequence")
