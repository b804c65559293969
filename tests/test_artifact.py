"""The artifact: atomic staging, refusing non-empty outputs, and load_artifact's checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tracefuse.artifact import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PID_NAME,
    STAGING_PREFIX,
    Manifest,
    TensorSpec,
    finalize,
    load_artifact,
    staged_artifact,
)
from tracefuse.errors import ArtifactError


def _manifest(graph: str = "model.onnx") -> Manifest:
    # The payloads here are placeholder bytes, not ONNX: a format name with no FORMAT_TRUST entry keeps
    # load_artifact from parsing them (the ONNX checks are tested in tests/security/).
    return Manifest(
        format="test-bytes", graph=graph, source={"kind": "test", "id": "test"}, task="feature-extraction",
        inputs=(TensorSpec("x", "float32", ("batch", 4)),), outputs=(TensorSpec("y", "float32", ("batch", 2)),),
    )


def _write(out: Path, payload: bytes = b"graph bytes", **kwargs) -> None:
    with staged_artifact(out, **kwargs) as staging:
        (staging / "model.onnx").write_bytes(payload)
        finalize(staging, _manifest())


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith((STAGING_PREFIX, ".tracefuse-old-"))]


def _rewrite_manifest(root: Path, change) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_staged_artifact_writes_manifest_with_hashes(tmp_path):
    out = tmp_path / "art"
    _write(out, b"abc")
    art = load_artifact(out)
    # The hash is computed here independently of the library.
    assert art.manifest.files["model.onnx"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert art.manifest.files["model.onnx"]["size"] == 3
    assert art.manifest.format_version == FORMAT_VERSION
    assert art.manifest.inputs[0].shape == ("batch", 4)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "model.onnx"]
    assert _leftovers(tmp_path) == []


def test_exception_inside_leaves_nothing(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_artifact(out) as staging:
            (staging / "model.onnx").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_exception_keeps_previous_artifact_on_overwrite(tmp_path):
    out = tmp_path / "art"
    _write(out, b"first")
    with pytest.raises(KeyboardInterrupt):
        with staged_artifact(out, overwrite=True) as staging:
            (staging / "model.onnx").write_bytes(b"second")
            raise KeyboardInterrupt
    assert (out / "model.onnx").read_bytes() == b"first"
    load_artifact(out)
    assert _leftovers(tmp_path) == []


def test_non_empty_output_refused_without_overwrite(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ArtifactError, match="not empty") as info:
        _write(out)
    assert "--overwrite" in str(info.value)
    assert (out / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert _leftovers(tmp_path) == []


def test_empty_existing_directory_is_accepted(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    _write(out)
    assert load_artifact(out).manifest.graph == "model.onnx"


def test_output_path_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "art"
    out.write_text("a file")
    with pytest.raises(ArtifactError, match="is a file"):
        _write(out)
    assert out.read_text() == "a file"


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "art"
    _write(out, b"first")
    (out / "stray.txt").write_text("from the old artifact")
    _write(out, b"second", overwrite=True)
    assert (out / "model.onnx").read_bytes() == b"second"
    assert not (out / "stray.txt").exists()
    assert load_artifact(out).manifest.files["model.onnx"]["sha256"] == hashlib.sha256(b"second").hexdigest()
    assert _leftovers(tmp_path) == []


def test_stale_staging_of_dead_process_is_cleaned(tmp_path):
    stale = tmp_path / f"{STAGING_PREFIX}art-dead"
    stale.mkdir()
    (stale / PID_NAME).write_text("999999999")  # a writer that is gone
    _write(tmp_path / "art")
    assert not stale.exists()


@pytest.fixture
def artifact(tmp_path) -> Path:
    out = tmp_path / "art"
    _write(out, b"original graph")
    return out


def test_tampered_file_refused(artifact):
    (artifact / "model.onnx").write_bytes(b"tampered graph")
    with pytest.raises(ArtifactError, match="modified after it was written") as info:
        load_artifact(artifact)
    assert "model.onnx" in str(info.value)
    # verify=False is the explicit escape hatch
    assert load_artifact(artifact, verify=False).manifest.graph == "model.onnx"


def test_missing_file_refused(artifact):
    (artifact / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="incomplete") as info:
        load_artifact(artifact)
    assert "'model.onnx' is missing" in str(info.value)


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no artifact at"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        load_artifact(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_artifact(tmp_path / "file")


def test_newer_format_version_refused(artifact):
    _rewrite_manifest(artifact, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1}") as info:
        load_artifact(artifact)
    assert "upgrade tracefuse" in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe garbage"])
def test_malformed_json_refused(artifact, text):
    (artifact / MANIFEST_NAME).write_text(text, encoding="latin-1")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(artifact)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.clear() or d.update(format_version=1), "key 'format' must be a str"),
        (lambda d: d.pop("format_version"), "no integer format_version"),
        (lambda d: d.update(format_version="1"), "no integer format_version"),
        (lambda d: d.update(inputs={"x": 1}), "key 'inputs' must be a list"),
        (lambda d: d["inputs"][0].pop("shape"), "tensor entry in the manifest is malformed"),
        (lambda d: d.update(files=["model.onnx"]), "'files' must map"),
        (lambda d: d.update(validation_shapes=[{"batch": "one"}]), "validation_shapes"),
    ],
)
def test_malformed_manifest_fields_refused(artifact, change, message):
    _rewrite_manifest(artifact, change)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact)


def test_manifest_that_is_not_an_object_refused(artifact):
    (artifact / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        load_artifact(artifact)


@pytest.mark.parametrize("name", ["../outside.onnx", "sub/../../outside.onnx", "/etc/passwd", ""])
def test_graph_name_outside_the_artifact_refused(artifact, name):
    outside = artifact.parent / "outside.onnx"
    outside.write_bytes(b"original graph")
    digest = hashlib.sha256(b"original graph").hexdigest()

    def change(d):
        d["graph"] = name
        d["files"] = {name: {"sha256": digest, "size": 14}}

    _rewrite_manifest(artifact, change)
    with pytest.raises(ArtifactError, match="relative path inside the artifact"):
        load_artifact(artifact)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd"])
def test_listed_file_outside_the_artifact_refused(artifact, name):
    _rewrite_manifest(artifact, lambda d: d["files"].update({name: {"sha256": "0" * 64, "size": 1}}))
    with pytest.raises(ArtifactError, match="relative path inside the artifact"):
        load_artifact(artifact)


def test_symlink_leading_outside_refused(artifact):
    outside = artifact.parent / "secret.bin"
    outside.write_bytes(b"secret")
    (artifact / "weights.bin").symlink_to(outside)
    digest = hashlib.sha256(b"secret").hexdigest()
    _rewrite_manifest(artifact, lambda d: d["files"].update({"weights.bin": {"sha256": digest, "size": 6}}))
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        load_artifact(artifact)


def test_graph_not_listed_in_files_refused(artifact):
    _rewrite_manifest(artifact, lambda d: d.update(files={}))
    with pytest.raises(ArtifactError, match="does not list its graph file"):
        load_artifact(artifact)


def test_manifest_round_trip():
    m = _manifest()
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m


def test_overwrite_never_replaces_a_directory_that_is_not_an_artifact(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("user data")
    with pytest.raises(ArtifactError, match="replaces only a tracefuse artifact"):
        _write(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
