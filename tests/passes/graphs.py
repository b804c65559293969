"""Small hand-built ONNX graphs, one per fusion pattern variant, and a helper to compare them on ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 16
RNG = np.random.default_rng(0)


def _const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes, inputs, output, inits) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, HIDDEN]) for n in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [2, 5, HIDDEN])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def layer_norm(residual: bool = False) -> ir.Model:
    """Decomposed LayerNorm of x (or of x + skip): mean, centre, variance, sqrt, divide, scale, shift."""
    nodes = []
    src = "x"
    if residual:
        nodes.append(helper.make_node("Add", ["x", "skip"], ["sum"]))
        src = "sum"
    nodes += [
        helper.make_node("ReduceMean", [src, "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", [src, "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["s"]),
        helper.make_node("Add", ["s", "beta"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes"), _const("two", 2.0),
             _const("eps", 1e-5), _const("gamma", RNG.standard_normal(HIDDEN)),
             _const("beta", RNG.standard_normal(HIDDEN))]
    return _model(nodes, ["x", "skip"] if residual else ["x"], "y", inits)


def skip_layer_norm() -> ir.Model:
    """Add(x, skip) into a LayerNormalization op (what the dynamo exporter writes for a residual)."""
    nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    inits = [_const("gamma", RNG.standard_normal(HIDDEN)), _const("beta", RNG.standard_normal(HIDDEN))]
    return _model(nodes, ["x", "skip"], "y", inits)


def rms_norm() -> ir.Model:
    """Decomposed RMSNorm (Llama style): x * 1/sqrt(mean(x²) + eps) * weight."""
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["n"]),
        helper.make_node("Mul", ["gamma", "n"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes"), _const("two", 2.0),
             _const("eps", 1e-6), _const("gamma", RNG.standard_normal(HIDDEN))]
    return _model(nodes, ["x"], "y", inits)


def rms_norm_div() -> ir.Model:
    """Decomposed RMSNorm as the TorchScript exporter writes torch.rsqrt: x * Div(1, sqrt(mean(x²) + eps)) * w."""
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Div", ["one", "rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["n"]),
        helper.make_node("Mul", ["gamma", "n"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes"), _const("two", 2.0),
             _const("eps", 1e-6), _const("one", 1.0), _const("gamma", RNG.standard_normal(HIDDEN))]
    return _model(nodes, ["x"], "y", inits)


def erf_gelu(bias: bool = False) -> ir.Model:
    """Exact GELU, 0.5·x·(1 + erf(x/√2)), optionally of x + bias."""
    nodes, src = [], "x"
    if bias:
        nodes.append(helper.make_node("Add", ["x", "bias"], ["xb"]))
        src = "xb"
    nodes += [
        helper.make_node("Div", [src, "sqrt2"], ["xd"]),
        helper.make_node("Erf", ["xd"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", [src, "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    inits = [_const("sqrt2", np.sqrt(2.0)), _const("one", 1.0), _const("half", 0.5),
             _const("bias", RNG.standard_normal(HIDDEN))]
    return _model(nodes, ["x"], "y", inits if bias else inits[:3])


def tanh_gelu() -> ir.Model:
    """The tanh approximation as Transformers' gelu_new writes it: (0.5·x)·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    nodes = [
        helper.make_node("Pow", ["x", "three"], ["x3"]),
        helper.make_node("Mul", ["c", "x3"], ["cx3"]),
        helper.make_node("Add", ["x", "cx3"], ["inner"]),
        helper.make_node("Mul", ["k", "inner"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["t"]),
        helper.make_node("Add", ["one", "t"], ["t1"]),
        helper.make_node("Mul", ["half", "x"], ["m"]),
        helper.make_node("Mul", ["m", "t1"], ["y"]),
    ]
    inits = [_const("three", 3.0), _const("c", 0.044715), _const("k", np.sqrt(2 / np.pi)), _const("one", 1.0),
             _const("half", 0.5)]
    return _model(nodes, ["x"], "y", inits)


def softmax_attention_core() -> ir.Model:
    """softmax(x·xᵀ/√d)·x with no projections: one attention block that the ORT rules cannot fuse."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["s"]),
        helper.make_node("Div", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["y"]),
    ]
    return _model(nodes, ["x"], "y", [_const("scale", 4.0)])


def feeds_for(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 feeds for every graph input."""
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in v.shape]).astype(np.float32)
            for v in model.graph.inputs}


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model on ONNX Runtime CPU with its own graph rewrites off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def ops(model: ir.Model) -> list[str]:
    """Op types of the top-level graph, in order."""
    return [n.op_type for n in model.graph]
