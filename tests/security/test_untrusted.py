"""Untrusted files: external data and manifest names that escape the artifact, manifest-less graphs, hashes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests.security.helpers import WEIGHTS, add_model, copy_artifact, write_artifact
from tracefuse import api
from tracefuse.artifact import MANIFEST_NAME, load_artifact
from tracefuse.errors import ArtifactError
from tracefuse.trust import FORMAT_TRUST, format_trust, refuse_unverified

X = np.array([10, 20, 30, 40], dtype=np.float32)


def _forbid_ort(monkeypatch):
    """Make any ONNX Runtime session creation fail the test: the refusal must come before it."""
    import onnxruntime

    def boom(*args, **kwargs):
        raise AssertionError("ONNX Runtime was asked to open a file that should have been refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)


def test_external_data_inside_the_artifact_loads_and_runs(tmp_path):
    root = write_artifact(tmp_path / "ok", add_model("weights.bin"), {"weights.bin": WEIGHTS.tobytes()})
    with api.load(root) as runner:
        np.testing.assert_array_equal(runner.infer({"x": X})["y"], X + np.array([0, 1, 2, 3], np.float32))


@pytest.mark.parametrize("in_constant", [False, True], ids=["initializer", "constant-attribute"])
@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "SECRET_ABS"])
def test_external_data_escaping_the_artifact_is_refused(tmp_path, monkeypatch, location, in_constant):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(WEIGHTS.tobytes())
    location = str(secret) if location == "SECRET_ABS" else location
    root = write_artifact(tmp_path / "art", add_model(location, in_constant=in_constant))
    _forbid_ort(monkeypatch)
    with pytest.raises(ArtifactError, match="external data outside the artifact directory") as info:
        api.load(root)
    assert repr(location) in str(info.value)
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load_artifact(root, verify=False)  # skipping hashes for speed never skips the path checks


def test_external_data_through_a_symlink_leading_outside_is_refused(tmp_path, monkeypatch):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(WEIGHTS.tobytes())
    root = tmp_path / "art"
    root.mkdir()
    (root / "weights.bin").symlink_to(secret)
    # The manifest even hashes the symlink's target correctly: the link itself is what is refused.
    write_artifact(root, add_model("weights.bin"))
    assert "weights.bin" in json.loads((root / MANIFEST_NAME).read_text())["files"]
    _forbid_ort(monkeypatch)
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        api.load(root)


def test_external_data_not_listed_in_the_manifest_is_refused(tmp_path, monkeypatch):
    root = write_artifact(tmp_path / "art", add_model("weights.bin"))
    (root / "weights.bin").write_bytes(WEIGHTS.tobytes())  # added after the manifest was written
    _forbid_ort(monkeypatch)
    with pytest.raises(ArtifactError, match="manifest does not list"):
        api.load(root)


def test_external_tensor_without_location_is_refused(tmp_path):
    model = add_model("weights.bin")
    entry = model.graph.initializer[0].external_data
    del entry[:]
    root = write_artifact(tmp_path / "art", model)
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load_artifact(root)


def test_manifest_file_symlinked_outside_is_refused(tmp_path, bert_artifact):
    root = copy_artifact(bert_artifact, tmp_path / "bert")
    outside = tmp_path / "model.onnx"
    (root / "model.onnx").rename(outside)
    (root / "model.onnx").symlink_to(outside)  # same bytes, same hash, but outside the directory
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        api.load(root)


def test_load_verifies_hashes_by_default_and_verify_false_opts_out(tmp_path, bert_artifact):
    root = copy_artifact(bert_artifact, tmp_path / "bert")
    data = json.loads((root / MANIFEST_NAME).read_text())
    data["files"]["model.onnx"]["sha256"] = "0" * 64
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        api.load(root)
    with api.load(root, verify=False) as runner:
        assert runner.name == "ort-cpu"


def test_manifest_less_onnx_loads_with_a_warning(tmp_path, caplog, bert_artifact):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes((bert_artifact / "model.onnx").read_bytes())
    with caplog.at_level(logging.WARNING, logger="tracefuse.trust"):
        runner = api.load(bare)
    assert any("has no manifest.json" in r.getMessage() for r in caplog.records)
    with runner:
        names = [s.name for s in runner.inputs]
        assert names == [s.name for s in load_artifact(bert_artifact).manifest.inputs]
        feeds = {n: np.ones((1, 5), dtype=np.int64) for n in names}
        expected = api.load(bert_artifact).infer(feeds)
        for name, value in runner.infer(feeds).items():
            np.testing.assert_array_equal(value, expected[name])
    # a path to the file itself works too, and the external-data checks still run on bare files
    assert load_artifact(bare / "model.onnx").manifest.graph == "model.onnx"
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model.onnx").write_bytes(add_model("../secret.bin").SerializeToString())
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load_artifact(tmp_path / "evil")


def test_code_executing_formats_need_trust_unverified(tmp_path, caplog):
    graph = tmp_path / "model.pt2"
    with pytest.raises(ArtifactError, match="can execute arbitrary code") as info:
        refuse_unverified(graph, "pt2", trust_unverified=False)
    assert "--trust-unverified" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="tracefuse.trust"):
        refuse_unverified(graph, "pt2", trust_unverified=True)
    assert any("cannot verify" in r.getMessage() for r in caplog.records)
    refuse_unverified(graph, "onnx", trust_unverified=False)  # ONNX cannot run code: allowed
    assert format_trust("some-future-format").executes_code  # unregistered formats are assumed unsafe
    assert FORMAT_TRUST["onnx"].executes_code is False


def test_directory_without_manifest_or_single_graph_is_refused(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"y")
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        load_artifact(tmp_path)


@pytest.mark.parametrize("name", ["model\0.onnx", "a/../../b"])
def test_odd_manifest_names_give_artifact_errors(tmp_path, bert_artifact, name):
    root = copy_artifact(bert_artifact, tmp_path / "bert")
    data = json.loads((root / MANIFEST_NAME).read_text())
    data["files"][name] = {"sha256": "0" * 64, "size": 1}
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="relative path inside the artifact"):
        load_artifact(root)


def test_manifest_less_torchscript_is_refused_without_the_flag(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 pretend TorchScript archive")
    with pytest.raises(ArtifactError, match="can execute arbitrary code"):
        api.load(tmp_path)
    with pytest.raises(ArtifactError, match="cannot describe a torchscript graph"):
        load_artifact(tmp_path, trust_unverified=True)


def test_cli_inspect_of_manifest_less_graphs(tmp_path):
    from typer.testing import CliRunner

    from tracefuse.cli import app

    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(add_model().SerializeToString())
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "onnx"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["graph"]["ops"] == {"Add": 1}
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "model.pt").write_bytes(b"not really")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "ts")])
    assert result.exit_code == 2 and "--trust-unverified" in result.output
