"""Speech models whose main input is a spectrogram (`input_features`): layout, length and axes found generically."""

from __future__ import annotations

import onnx
import pytest

from tracefuse import api
from tracefuse.errors import ExportError
from tracefuse.exporters.audio_features import feature_fields, mel_bins


def _graph_inputs(result) -> dict[str, tuple]:
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    return {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}


@pytest.mark.parametrize(("model_type", "expected"), [
    ("parakeet_encoder", ("batch", "frames", 80)),  # conformer: frames first, any length
    ("qwen2_audio_encoder", ("batch", 128, 3000)),  # Whisper-style: mel first, positions fix 3000 frames
    ("speech_to_text", ("batch", "frames", 80)),  # an encoder-decoder: decoder ids on their own axis too
])
def test_spectrogram_models_validate_at_two_shapes(tmp_path, model_type, expected):
    result = api.export(f"tiny:{model_type}", tmp_path / model_type, task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    inputs = _graph_inputs(result)
    assert inputs["input_features"] == expected
    if model_type == "speech_to_text":
        assert inputs["decoder_input_ids"] == ("batch", "decoder_sequence")


def test_a_config_without_mel_bins_is_a_clear_error():
    class Config:
        hidden_size = 32

    assert mel_bins(Config()) is None
    with pytest.raises(ExportError) as info:
        feature_fields(object(), Config(), "input_features", "made_up")
    assert "mel-bin count" in str(info.value) and "num_mel_bins" in str(info.value)


def test_a_feature_projection_width_counts_as_the_mel_bins():
    from tracefuse.exporters.tiny import tiny_config

    assert mel_bins(tiny_config("wav2vec2-bert")) == 160  # feature_projection_input_dim: 80 mels x 2 stacked


def test_a_padding_mask_is_true_at_the_padded_frames_and_the_encoder_validates(tmp_path):
    import numpy as np

    from tracefuse.artifact import TensorSpec
    from tracefuse.validation.inputs import generate_inputs

    spec = TensorSpec("audio_mel_mask", "bool", ("batch", "frames"), {"kind": "padding"})
    mask = generate_inputs((spec,), {"batch": 3, "frames": 10})["audio_mel_mask"]
    assert mask.dtype == np.bool_ and not mask[0].any()  # the first row whole: nothing padded
    assert mask[1, -3:].all() and not mask[1, :-3].any() and mask[2, -6:].all()  # later rows padded at the end
    # gemma3n's audio encoder takes its mel frames with such a mask (masked_fill where True)
    result = api.export("tiny:gemma3n_audio", tmp_path / "g", task="feature-extraction", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    assert "audio_mel_mask" in _graph_inputs(result)


def test_a_text_and_audio_model_gets_the_waveform_it_requires_beside_its_ids(tmp_path):
    # pe_audio scores a caption against a sound: input_values has no default; one channel, a fixed length
    result = api.export("tiny:pe_audio", tmp_path / "p", task="feature-extraction", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    inputs = _graph_inputs(result)
    assert inputs["input_ids"] == ("batch", "sequence")
    assert inputs["input_values"][0] == "batch" and inputs["input_values"][1] == 1
    assert all(isinstance(d, int) for d in inputs["input_values"][1:])
