"""Shape-op simplification: replace reads of statically known dimensions with constants.

Exporters often compute sizes at run time (``Shape -> Gather/Slice -> Cast -> Sqrt`` for an attention
scale), which hides a constant behind shape arithmetic and stops pattern rules that need it. This module
runs ONNX shape inference with data propagation, resolves the ``-1`` of a ``Reshape`` when the element
count fixes it (symbolic dimensions cancel: ``[b, s, 32] -> [b, s, 4, -1]`` gives ``8``), writes the
resolved dimensions into every value that carries them, and replaces ``Gather`` / ``Slice`` of a
``Shape`` whose selected dimensions are all known integers with a constant. A dimension that stays
symbolic (batch, sequence) is never frozen: its ``Shape`` read is left in place.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 4


def simplify_shapes(model: ir.Model) -> dict[str, int]:
    """Infer shapes, resolve dimensions fixed by element counts, fold known ``Shape`` reads to constants.

    Returns counts: ``resolved_dims`` (symbolic dimensions proven constant) and ``shape_reads_folded``
    (``Gather`` / ``Slice`` of ``Shape`` replaced by constants). Dead nodes are left for a later pass.
    """
    ShapeInferencePass(strict_mode=False, data_prop=True)(model)
    known: dict[str, int] = {}
    for _ in range(_MAX_ROUNDS):
        found = _resolve_reshape_dims(model.graph, known)
        if not found:
            break
        known.update(found)
        _substitute(model.graph, known)
    folded = _fold_shape_reads(model.graph)
    logger.debug("resolved %d symbolic dims %s, folded %d shape reads", len(known), known, folded)
    return {"resolved_dims": len(known), "shape_reads_folded": folded}


def _split(shape: ir.Shape) -> tuple[int, Counter[str]] | None:
    """Return (product of the integer dims, multiset of symbolic names), or None for an unnamed dim."""
    product, symbols = 1, Counter()
    for dim in shape:
        if isinstance(dim, int):
            product *= dim
        elif dim.value is None:
            return None
        else:
            symbols[dim.value] += 1
    return product, symbols


def _resolve_reshape_dims(graph: ir.Graph, known: dict[str, int]) -> dict[str, int]:
    """Symbols of Reshape outputs that the input's element count determines, with their values."""
    found: dict[str, int] = {}
    for node in graph:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src is None or src.shape is None or out.shape is None:
            continue
        split_in, split_out = _split(src.shape), _split(out.shape)
        if split_in is None or split_out is None:
            continue
        (in_prod, in_syms), (out_prod, out_syms) = split_in, split_out
        unknown = out_syms - in_syms
        if in_syms - out_syms or sum(unknown.values()) != 1 or in_prod == 0 or out_prod == 0:
            continue
        (symbol,) = unknown
        if symbol in known or symbol in found or in_prod % out_prod:
            continue
        found[symbol] = in_prod // out_prod
    return found


def _substitute(graph: ir.Graph, known: dict[str, int]) -> None:
    """Write resolved dimensions into every value of the graph (and its subgraphs) that carries them."""
    values: list[ir.Value] = list(graph.inputs)
    for node in ir.traversal.RecursiveGraphIterator(graph):
        values.extend(node.outputs)
    for value in values:
        shape = value.shape
        if shape is None or not any(not isinstance(d, int) and d.value in known for d in shape):
            continue
        value.shape = ir.Shape([known[d.value] if not isinstance(d, int) and d.value in known else d
                                for d in shape])


def _const_ints(value: ir.Value | None) -> list[int] | None:
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return [int(v) for v in np.asarray(array).reshape(-1)] if array.dtype.kind == "i" else None


def _read_dims(node: ir.Node) -> list[int | ir.SymbolicDim] | None:
    """The dims a Gather(axis 0) / Slice(axis 0, step 1) of a Shape output selects, or None."""
    source = node.inputs[0] if node.inputs else None
    producer = source.producer() if source is not None else None
    if producer is None or producer.op_type != "Shape" or producer.domain not in ("", "ai.onnx"):
        return None
    tensor = producer.inputs[0]
    if tensor is None or tensor.shape is None:
        return None
    start = producer.attributes.get_int("start", 0)
    end = producer.attributes.get_int("end", None)
    dims = list(tensor.shape)[start:end]
    if node.op_type == "Gather":
        indices = _const_ints(node.inputs[1])
        if node.attributes.get_int("axis", 0) != 0 or indices is None:
            return None
        if node.inputs[1].const_value.shape.rank() > 1 or not all(-len(dims) <= i < len(dims) for i in indices):
            return None
        return [dims[i] for i in indices]
    starts, ends = _const_ints(node.inputs[1]), _const_ints(node.inputs[2])
    axes = _const_ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else [0]
    steps = _const_ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
    if starts is None or ends is None or axes not in ([0], [-1]) or steps != [1] or len(starts) != 1:
        return None
    return dims[slice(starts[0], ends[0])]


def _fold_shape_reads(graph: ir.Graph) -> int:
    """Replace Gather/Slice reads of a Shape whose selected dims are all integers with a Constant."""
    folded = 0
    for node in list(graph):
        if node.op_type not in ("Gather", "Slice") or node.domain not in ("", "ai.onnx"):
            continue
        output = node.outputs[0]
        dims = _read_dims(node)
        if dims is None or not all(isinstance(d, int) for d in dims) or output.is_graph_output():
            continue
        array = np.array(dims, dtype=np.int64)
        if node.op_type == "Gather" and node.inputs[1].const_value.shape.rank() == 0:
            array = array.reshape(())
        const = ir.node("Constant", [], attributes={"value": ir.tensor(array, name=f"{output.name}_folded")})
        const.outputs[0].name = f"{output.name}_folded"
        const.outputs[0].shape, const.outputs[0].dtype = ir.Shape(array.shape), ir.DataType.INT64
        const.outputs[0].const_value = const.attributes["value"].value
        graph.insert_before(node, const)
        ir.convenience.replace_all_uses_with(output, const.outputs[0])
        folded += 1
    return folded
