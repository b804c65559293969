"""Runners of code-executing formats refuse a graph file whose sha256 differs from the manifest,
even when the artifact was loaded with verify=False."""

from __future__ import annotations

import shutil

import pytest

from tracefuse import api
from tracefuse.artifact import load_artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes import open_runner


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def torchscript_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("trusted") / "ts"
    api.export("tiny:bert", out, format="torchscript", validate=False)
    return out


def test_untouched_torchscript_opens(torchscript_artifact):
    with api.load(torchscript_artifact, verify=False) as runner:
        assert runner.name == "torchscript"


def test_tampered_torchscript_is_refused_even_without_verify(torchscript_artifact, tmp_path):
    copy = tmp_path / "ts"
    shutil.copytree(torchscript_artifact, copy)
    _tamper(copy / "model.pt")
    with pytest.raises(ArtifactError, match="modified after"):
        api.load(copy)  # the default verify catches it first
    with pytest.raises(ArtifactError, match="refusing to open 'model.pt'.*executes code"):
        api.load(copy, verify=False)
    with pytest.raises(ArtifactError, match="refusing to open"):
        open_runner(load_artifact(copy, verify=False)).open()


def test_manifest_without_hash_is_refused(torchscript_artifact, tmp_path):
    import json

    copy = tmp_path / "ts"
    shutil.copytree(torchscript_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.pt"].pop("sha256")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="records no sha256"):
        api.load(copy, verify=False)


def test_torchscript_runner_rejects_an_onnx_artifact(bert_artifact):
    with pytest.raises(ArtifactError, match="runs torchscript artifacts"):
        open_runner(load_artifact(bert_artifact), "torchscript")
