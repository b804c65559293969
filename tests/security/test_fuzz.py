"""Fuzzing the manifest parser and the ONNX load/inspect path: every input is a success or a TracefuseError.

Bounded: a fixed number of examples per target and no per-example deadline, so the file runs in well
under a minute; hypothesis' database replays earlier failures first.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.helpers import add_model, write_artifact
from tracefuse import api
from tracefuse.artifact import MANIFEST_NAME, Manifest, hash_files, load_artifact, read_manifest
from tracefuse.errors import TracefuseError

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _valid_manifest() -> dict:
    return {
        "format_version": 1, "format": "onnx", "graph": "model.onnx", "source": {"id": "x"}, "task": "custom",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4], "fill": {}}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
        "validation_shapes": [{"batch": 1}], "tolerance": {"atol": 1e-4}, "export": {}, "tool_versions": {},
        "passes": [], "files": {"model.onnx": {"sha256": "0" * 64, "size": 1}}, "validation": None,
    }


def _parse(data) -> None:
    try:
        manifest = Manifest.from_dict(data)
    except TracefuseError:
        return
    Manifest.from_dict(json.loads(json.dumps(manifest.to_dict(), default=str)))  # what it accepts round-trips


@FUZZ
@given(json_values)
def test_manifest_from_arbitrary_json(data):
    _parse(data)


@FUZZ
@given(st.sampled_from(sorted(_valid_manifest())), json_values, st.booleans())
def test_manifest_with_one_field_replaced(key, value, nested):
    data = _valid_manifest()
    if nested and isinstance(data[key], list) and data[key]:
        data[key][0] = value
    else:
        data[key] = value
    _parse(data)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_read_manifest_from_arbitrary_bytes(blob):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST_NAME).write_bytes(blob)
        try:
            read_manifest(Path(tmp))
        except TracefuseError:
            pass


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


def _mutate(data: bytes, edits, cut) -> bytes:
    buf = bytearray(data)
    for where, value in edits:
        buf[int(where**3 * len(buf))] = value  # skewed to the start, where the graph structure lies
    return bytes(buf[: max(1, int(cut * len(buf)))]) if cut is not None else bytes(buf)


def _load_and_inspect(template: Path, graph: bytes) -> None:
    """Write `graph` as the artifact's model.onnx, re-hash it so the hash check passes, then load and inspect."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "art"
        root.mkdir()
        (root / "model.onnx").write_bytes(graph)
        data = json.loads((template / MANIFEST_NAME).read_text())
        data["files"] = hash_files(root)
        (root / MANIFEST_NAME).write_text(json.dumps(data))
        try:
            load_artifact(root)
            api.inspect(root)
        except TracefuseError:
            pass


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("fuzz") / "small", add_model())


@FUZZ
@given(mutations, st.none() | st.floats(0, 1))
def test_load_and_inspect_mutated_small_model(small_artifact, edits, cut):
    _load_and_inspect(small_artifact, _mutate((small_artifact / "model.onnx").read_bytes(), edits, cut))


@settings(FUZZ, max_examples=60)
@given(mutations, st.none() | st.floats(0, 1))
def test_load_and_inspect_mutated_bert(bert_artifact, edits, cut):
    _load_and_inspect(bert_artifact, _mutate((bert_artifact / "model.onnx").read_bytes(), edits, cut))


@FUZZ
@given(st.binary(max_size=300))
def test_load_and_inspect_arbitrary_bytes(small_artifact, blob):
    _load_and_inspect(small_artifact, blob)


@FUZZ
@given(mutations, st.none() | st.floats(0, 1))
def test_manifest_less_load_and_inspect_of_mutated_model(small_artifact, edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "model.onnx"
        graph.write_bytes(_mutate((small_artifact / "model.onnx").read_bytes(), edits, cut))
        try:
            load_artifact(Path(tmp))
            api.inspect(graph)
        except TracefuseError:
            pass
