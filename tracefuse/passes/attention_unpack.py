"""Unpack ONNX Runtime's fused `Attention` before quantization, so its QKV projection is quantized too.

ONNX Runtime's dynamic quantizer turns `Attention` into `QAttention` only when the node has no
`qkv_hidden_sizes` attribute (the attention fusion always writes one) and a constant weight (the fusion
writes a Concat of the three projections, folded only when ONNX Runtime loads the graph); and its
`QAttention` drops the `attention_bias` input, which carries the padding mask in graphs from
Transformers 5, so quantizing such a node would silently ignore padding. Instead, each unpackable
`Attention` becomes a MatMul over the concatenated (constant) Q/K/V weights, a Split, and a
`MultiHeadAttention` that takes the bias and the attention bias: the same computation (fp32 outputs agree
to ~1e-6), whose MatMul the quantizer handles like any other projection. `Attention` nodes that cannot
be unpacked (a past state, a unidirectional mask, a rotary embedding, a mask index, different Q and K
widths) are left as they are, and `attention_bias_nodes` names the ones the quantizer must leave alone.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
# Attributes MultiHeadAttention takes over as they are; any other attribute set to a non-default value
# (unidirectional, do_rotary, past_present_share_buffer, ...) keeps the node fused.
CARRIED = ("num_heads", "scale", "mask_filter_value")
IGNORED = ("qkv_hidden_sizes",)


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a numpy array when it is a constant, or a Concat of constants (the fused QKV weight)."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)  # an initializer or a Constant node's value
    if tensor is not None:
        return tensor.numpy()
    node = value.producer()
    if node is None or node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
        return None
    parts = [constant_array(v) for v in node.inputs]
    if any(p is None for p in parts):
        return None
    axis = node.attributes["axis"].as_int() if "axis" in node.attributes else 0
    return np.concatenate(parts, axis=axis)


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _unpackable(node: ir.Node) -> tuple[np.ndarray, np.ndarray | None, list[int]] | None:
    """(weight, bias, [q, k, v] widths) when the node can become MatMul + Split + MultiHeadAttention."""
    if node.op_type != "Attention" or node.domain != MS_DOMAIN:
        return None
    if any(_input(node, i) is not None for i in (3, 4, 6, 7)):  # mask index, past, past length, ...
        return None
    for name, attr in node.attributes.items():
        if name not in CARRIED + IGNORED and attr.value not in (0, 0.0, None):
            return None
    if len(node.outputs) > 1 and any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return None
    weight, bias = constant_array(_input(node, 1)), constant_array(_input(node, 2))
    if weight is None or weight.ndim != 2 or (_input(node, 2) is not None and bias is None):
        return None
    total = weight.shape[1]
    sizes = list(node.attributes["qkv_hidden_sizes"].as_ints()) if "qkv_hidden_sizes" in node.attributes else \
        [total // 3] * 3
    if sum(sizes) != total or sizes[0] != sizes[1] or (bias is not None and bias.shape != (total,)):
        return None
    return weight, bias, sizes


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array), shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    graph.register_initializer(value)
    return value


def unpack_attention(model: ir.Model) -> int:
    """Rewrite every unpackable com.microsoft `Attention` of the main graph; returns how many were rewritten."""
    graph = model.graph
    count = 0
    for node in list(graph):
        plan = _unpackable(node)
        if plan is None:
            continue
        weight, bias, sizes = plan
        base = node.name or f"attention_{count}"
        w = _initializer(graph, f"{base}_qkv_weight", weight)
        split_sizes = _initializer(graph, f"{base}_qkv_split", np.asarray(sizes, np.int64))
        matmul = ir.node("MatMul", [node.inputs[0], w], name=f"{base}_qkv_projection")
        split = ir.node("Split", [matmul.outputs[0], split_sizes], {"axis": -1}, num_outputs=3,
                        name=f"{base}_qkv_split")
        b = _initializer(graph, f"{base}_qkv_bias", bias) if bias is not None else None
        inputs: list[ir.Value | None] = [*split.outputs, b, None, _input(node, 5)]
        while inputs and inputs[-1] is None:
            inputs.pop()
        attributes = {k: node.attributes[k].value for k in CARRIED if k in node.attributes}
        mha = ir.node("MultiHeadAttention", inputs, attributes, domain=MS_DOMAIN, name=f"{base}_mha")
        graph.insert_before(node, [matmul, split, mha])
        old, new = node.outputs[0], mha.outputs[0]
        new.shape, new.type = old.shape, old.type
        for i, output in enumerate(graph.outputs):
            if output is old:
                graph.outputs[i] = new
        ir.convenience.replace_all_uses_with(old, new)
        name = old.name
        graph.remove(node, safe=True)
        new.name = name
        count += 1
    if count:
        import onnx_ir.passes.common as common_passes

        common_passes.RemoveUnusedNodesPass()(model)  # the Concats that built the fused weight
        logger.info("unpacked %d Attention nodes for quantization", count)
    return count


def attention_bias_nodes(model: ir.Model) -> list[str]:
    """Fused `Attention` nodes with an attention-bias input, which ONNX Runtime's QAttention would drop."""
    return [n.name for n in model.graph
            if n.op_type == "Attention" and n.domain == MS_DOMAIN and _input(n, 5) is not None]
