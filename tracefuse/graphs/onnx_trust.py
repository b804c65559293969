"""Checks on ONNX files from elsewhere, made on the protobuf alone, before ONNX Runtime or onnx-ir reads them.

An ONNX model cannot run code, but a tensor stored as external data names a file by path, and a
loader follows that path: `../../home/user/.ssh/id_rsa`, `/etc/shadow` or a symlink leading out of the
artifact would be read into the model (onnx had CVEs for exactly this). `check_artifact` parses each
ONNX file without loading external data and refuses any location that leaves the artifact directory
or that the manifest does not list (a listed file's sha256 is checked by load_artifact).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import onnx

from tracefuse.artifact import Artifact, Manifest, TensorSpec, safe_member, sha256_file
from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)


def read_proto(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file without touching its external data; ArtifactError when it is not ONNX."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError has no stable import path
        raise ArtifactError(
            f"{path} is not a readable ONNX model (truncated, corrupt, or another file type)",
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            fix="re-export the artifact",
        ) from exc


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a model: initializers, sparse ones, node attributes, subgraphs and functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def external_locations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor stored as external data; location '' when it has none."""
    found = []
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            found.append((tensor.name, entries.get("location", "")))
    return found


def check_graph_file(root: Path, graph: str, listed: set[str] | None) -> None:
    """Refuse external data of ONNX file `graph` that leaves `root` or (when `listed` is given) is not listed."""
    model = read_proto(safe_member(root, graph))
    for tensor, location in external_locations(model):
        member = (PurePosixPath(graph).parent / location).as_posix() if location else ""
        try:
            if not location or ".." in PurePosixPath(location).parts or location.startswith(("/", "\\")):
                raise ArtifactError("empty, absolute or '..' location")
            safe_member(root, member)
        except ArtifactError as exc:
            raise ArtifactError(
                f"{root / graph} stores tensor '{tensor[:100]}' as external data outside the artifact directory",
                found=f"location {location!r} ({exc.problem})",
                fix="do not load this model: external data must be a file inside the artifact directory",
            ) from None
        if listed is not None and PurePosixPath(member).as_posix() not in listed:
            raise ArtifactError(
                f"{root / graph} reads external data from '{location}', which the manifest does not list, so "
                "its sha256 is never checked",
                fix="re-export the artifact with tracefuse",
            )


def check_artifact(artifact: Artifact) -> None:
    """FORMAT_TRUST check for ONNX: every .onnx file of the artifact keeps its external data inside it."""
    files = artifact.manifest.files
    listed = {PurePosixPath(n).as_posix() for n in files} if files else None
    names = {artifact.manifest.graph, *(n for n in files if n.endswith(".onnx"))}
    for name in sorted(names):
        check_graph_file(artifact.path, name, listed)


_NP_NAMES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.BFLOAT16: "bfloat16",
}


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.tensor_type
    dims: list[int | str] = []
    for i, dim in enumerate(kind.shape.dim):
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or f"{value.name}_{i}"))
    return TensorSpec(value.name, _NP_NAMES.get(kind.elem_type, "float32"), tuple(dims))


def bare_manifest(root: Path, graph: str) -> Manifest:
    """FORMAT_TRUST bare entry: a manifest describing an ONNX file that came without one (hashed now)."""
    model = read_proto(safe_member(root, graph))
    check_graph_file(root, graph, None)
    weights = {i.name for i in model.graph.initializer}
    names = [graph] + sorted({(PurePosixPath(graph).parent / loc).as_posix() for _, loc in external_locations(model)})
    files = {}
    for name in names:
        member = safe_member(root, name)
        if not member.is_file():
            raise ArtifactError(f"{root / graph} needs external data '{name}', which is missing", fix="copy it beside")
        files[name] = {"sha256": sha256_file(member), "size": member.stat().st_size}
    return Manifest(
        format="onnx", graph=graph, source={"kind": "unverified", "path": str(root / graph)}, task="custom",
        inputs=tuple(_spec(v) for v in model.graph.input if v.name not in weights),
        outputs=tuple(_spec(v) for v in model.graph.output), files=files,
        export=graph_versions(model),
    )


def graph_versions(model: onnx.ModelProto | Path) -> dict[str, Any]:
    """The IR version and default-domain opset of a model (or of the ONNX file at a path)."""
    proto = read_proto(model) if isinstance(model, Path) else model
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    return {"ir_version": int(proto.ir_version), "opset": opsets.get("ai.onnx"), "opsets": opsets}
