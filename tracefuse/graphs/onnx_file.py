"""ONNX graph files on onnx-ir: load with clear errors, save (external data past 2 GB), inspect."""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from pathlib import Path

import onnx_ir as ir

from tracefuse.artifact import TensorSpec
from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)

# Protobuf cannot hold a message over 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

_DTYPES = {
    "float32": ir.DataType.FLOAT, "float16": ir.DataType.FLOAT16, "bfloat16": ir.DataType.BFLOAT16,
    "float64": ir.DataType.DOUBLE, "int64": ir.DataType.INT64, "int32": ir.DataType.INT32,
    "int8": ir.DataType.INT8, "uint8": ir.DataType.UINT8, "bool": ir.DataType.BOOL,
}


def load_onnx(path: str | Path) -> ir.Model:
    """Load an ONNX model (external data stays lazy); raises ArtifactError for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist", fix="check the artifact directory")
    try:
        model = ir.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises a DecodeError with no stable import path
        raise ArtifactError(
            f"{path} is not a readable ONNX model (truncated, corrupt, or another file type)",
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            fix="re-export the artifact",
        ) from exc
    if len(model.graph) == 0 and not model.graph.outputs:
        raise ArtifactError(f"{path} parses but holds an empty graph", fix="re-export the artifact")
    return model


def initializer_bytes(model: ir.Model) -> int:
    """Total size of the graph's initializers."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_onnx(model: ir.Model, path: str | Path) -> list[str]:
    """Save the model; weights go to `<name>.data` beside it when they would not fit in one protobuf.

    Returns the names of the files written.
    """
    path = Path(path)
    if initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        data_name = f"{path.name}.data"
        ir.save(model, str(path), external_data=data_name)
        return [path.name, data_name]
    ir.save(model, str(path))
    return [path.name]


def apply_io_specs(model: ir.Model, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Name the graph's inputs and outputs, and their dynamic axes, after the specs (in place)."""
    graph = model.graph
    if len(graph.inputs) != len(inputs) or len(graph.outputs) != len(outputs):
        raise ArtifactError(
            "the exported graph's inputs/outputs do not match the spec",
            found=f"{len(graph.inputs)} inputs, {len(graph.outputs)} outputs; "
            f"expected {len(inputs)} and {len(outputs)}",
        )
    for value, spec in zip(list(graph.inputs) + list(graph.outputs), list(inputs) + list(outputs)):
        value.name = spec.name
        if value.shape is None or len(value.shape) == len(spec.shape):
            value.shape = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in spec.shape])


def op_histogram(model: ir.Model) -> dict[str, int]:
    """How many nodes of each op type (domain-qualified when not the default domain), subgraphs included."""
    counts: collections.Counter[str] = collections.Counter()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        counts[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    return dict(counts.most_common())


def summary(model: ir.Model) -> dict[str, object]:
    """Opset, IR version, node count, parameter count and op histogram of a model."""
    params = sum(v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None)
    return {
        "ir_version": model.ir_version,
        "opset": model.opset_imports.get("", None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(list(ir.traversal.RecursiveGraphIterator(model.graph))),
        "parameters": int(params),
        "ops": op_histogram(model),
    }
