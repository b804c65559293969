"""Small ONNX artifacts built by hand for the security tests (no export needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from tracefuse.artifact import Manifest, TensorSpec, hash_files, write_manifest

WEIGHTS = np.arange(4, dtype=np.float32)


def add_model(location: str | None = None, *, in_constant: bool = False) -> onnx.ModelProto:
    """y = x + w, w = [0, 1, 2, 3]; w stored as external data at `location` when given."""
    w = numpy_helper.from_array(WEIGHTS, "w")
    if location is not None:
        set_external_data(w, location, offset=0, length=WEIGHTS.nbytes)
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    inits = [w]
    if in_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=w))
        inits = []
    graph = helper.make_graph(
        nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def write_artifact(root: Path, model: onnx.ModelProto, extra: dict[str, bytes] | None = None) -> Path:
    """Write `model` as root/model.onnx plus `extra` files, and a manifest hashing everything in root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(model.SerializeToString())
    for name, data in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    manifest = Manifest(
        format="onnx", graph="model.onnx", source={"kind": "test", "id": "add"}, task="custom",
        inputs=(TensorSpec("x", "float32", (4,)),), outputs=(TensorSpec("y", "float32", (4,)),),
        files=hash_files(root),
    )
    write_manifest(root, manifest)
    return root


def copy_artifact(src: Path, dest: Path) -> Path:
    """A private, writable copy of a shared fixture artifact."""
    shutil.copytree(src, dest, symlinks=True)
    return dest
