"""Version compatibility: the manifest records IR version and opset; a too-new model names both versions."""

from __future__ import annotations

import json

import onnx
import onnxruntime
import pytest

from tests.security.helpers import copy_artifact
from tracefuse import api
from tracefuse.artifact import MANIFEST_NAME, hash_files
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.ort_compat import model_versions, ort_limits


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_manifest_records_ir_version_and_opset(bert_artifact):
    model = onnx.load(str(bert_artifact / "model.onnx"), load_external_data=False)
    export = json.loads((bert_artifact / MANIFEST_NAME).read_text())["export"]
    assert export["ir_version"] == model.ir_version
    assert export["opset"] == _default_opset(model)
    assert model_versions(bert_artifact / "model.onnx") == (model.ir_version, _default_opset(model))


def test_ort_limits_are_probed():
    limits = ort_limits()
    assert limits.version == onnxruntime.__version__
    assert limits.max_ir_version is not None and limits.max_ir_version >= 10
    assert limits.max_opset is not None and limits.max_opset >= 18


def _patched(src, dest, change):
    root = copy_artifact(src, dest)
    model = onnx.load(str(root / "model.onnx"))
    change(model)
    onnx.save(model, str(root / "model.onnx"))
    data = json.loads((root / MANIFEST_NAME).read_text())
    data["files"] = hash_files(root)  # re-hashed: the hash check passes, the version check must catch it
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    return root


def _set_opset(model, version):
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda m: setattr(m, "ir_version", 99), "IR version 99 (this ONNX Runtime reads up to "),
        (lambda m: _set_opset(m, 999), "opset 999 (this ONNX Runtime supports up to "),
    ],
    ids=["ir-version", "opset"],
)
def test_too_new_model_names_both_versions(tmp_path, bert_artifact, change, needle):
    root = _patched(bert_artifact, tmp_path / "bert", change)
    with pytest.raises(ArtifactError) as info:
        api.load(root)
    message = str(info.value)
    assert needle in message
    assert f"onnxruntime {onnxruntime.__version__}" in message
    assert "upgrade onnxruntime" in message
