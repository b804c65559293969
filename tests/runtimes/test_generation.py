"""Greedy generation from a decoder artifact on ONNX Runtime gives exactly transformers' greedy tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tracefuse
from tracefuse.cli import app
from tracefuse.errors import FeedError
from tracefuse.exporters.sources import load_source

NEW_TOKENS = 32


def _invoke(args: list[str]):
    # cli.main stores {"verbose": ...} in app.info.context_settings, which breaks a later invocation in the
    # same process; clear it first (the same workaround as tests/passes/test_api_passes.py).
    app.info.context_settings = None
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_generate_matches_transformers_greedy(decoder_artifact, model_type):
    path, report = decoder_artifact(model_type)
    assert report["passed"]
    model = load_source(f"tiny:{model_type}", "text-generation").module
    eos = model.generation_config.eos_token_id
    # A batch of two prompts, the second left-padded: positions and the mask must follow transformers.
    ids = torch.tensor([[11, 402, 7, 93, 650, 18], [0, 0, 250, 31, 777, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                                  pad_token_id=0)
    with tracefuse.load(path) as runner:
        got = runner.generate(ids.numpy(), NEW_TOKENS, attention_mask=mask.numpy(), eos_token_id=eos, pad_token_id=0)
    assert got.shape == tuple(expected.shape)
    np.testing.assert_array_equal(got, expected.numpy())
    # The new tokens are not all one repeated id: the comparison tests more than a constant.
    assert len(set(got[:, ids.shape[1]:].ravel().tolist())) > 2


def test_generate_encoder_decoder_matches_transformers_greedy(decoder_artifact):
    path, report = decoder_artifact("t5", "text2text-generation")
    assert report["passed"]
    model = load_source("tiny:t5", "text2text-generation").module
    ids = torch.tensor([[11, 402, 7, 93, 650, 18, 5], [250, 31, 777, 4, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    # tiny t5's config names no decoder start token; t5 checkpoints use the pad id 0.
    with torch.no_grad():
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                                  decoder_start_token_id=0)
    with tracefuse.load(path) as runner:
        got = runner.generate(ids.numpy(), NEW_TOKENS, attention_mask=mask.numpy(), decoder_start_token_id=0)
    assert got.shape == tuple(expected.shape) == (2, 1 + NEW_TOKENS)
    np.testing.assert_array_equal(got, expected.numpy())
    assert got[0, 1] != got[1, 1]  # the two sources give different continuations


def test_generate_speech_encoder_decoder_matches_transformers_greedy(decoder_artifact):
    path, report = decoder_artifact("whisper", "automatic-speech-recognition")
    assert report["passed"] and "encoder" in [c["name"] for c in report["cases"]]
    model = load_source("tiny:whisper", "automatic-speech-recognition").module
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=generator)
    features[1] *= 0.5
    with torch.no_grad():
        expected = model.generate(features, max_new_tokens=NEW_TOKENS, do_sample=False)
    with tracefuse.load(path) as runner:
        got = runner.generate(features.numpy(), NEW_TOKENS)
    # whisper's generate() returns the new tokens without the decoder start token that tracefuse keeps.
    assert got.shape == (2, 1 + NEW_TOKENS) and got[0, 0] == model.generation_config.decoder_start_token_id
    np.testing.assert_array_equal(got[:, 1:], expected.numpy())


def test_generate_cli_prints_the_new_tokens(decoder_artifact):
    path, _ = decoder_artifact("llama")
    with tracefuse.load(path) as runner:
        expected = runner.generate([[5, 17, 300]], 6)[0, 3:].tolist()
    result = _invoke(["generate", str(path), "--prompt-ids", "5,17,300", "--max-new-tokens", "6",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["new_ids"] == [expected]


def test_generate_refuses_an_encoder_artifact_and_bad_prompts(bert_artifact):
    with tracefuse.load(bert_artifact) as runner, pytest.raises(FeedError, match="decoder artifact"):
        runner.generate([[1, 2, 3]], 4)
    result = _invoke(["generate", str(bert_artifact), "--prompt-ids", "1,x"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output
