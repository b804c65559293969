"""Rewrite rules tracefuse adds where onnxscript's own rules miss a pattern a supported model produces."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

_SQRT_TWO_OVER_PI = math.sqrt(2.0 / math.pi)


class GeluTanhHalfFirst(pattern.RewriteRuleClassBase):
    """Tanh GELU written `(0.5·x)·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` — Transformers' NewGELU/gelu_new as
    traced by the TorchScript exporter. onnxscript matches only `x·(0.5·(1 + tanh(...)))` (torchlib's form)."""

    def pattern(self, op, x):
        """The HF eager form; the rule set is built with `commute=True` for operand order."""
        cube = op.Pow(x, 3.0)
        inner = op.Add(x, op.Mul(cube, 0.044715))
        tanh = op.Tanh(op.Mul(inner, _SQRT_TWO_OVER_PI))
        return op.Mul(op.Mul(x, 0.5), op.Add(tanh, 1.0))

    def rewrite(self, op, x):
        """ONNX Runtime's FastGelu computes exactly the tanh approximation."""
        return op.FastGelu(x, _domain="com.microsoft")


def gelu_tanh_rules() -> pattern.RewriteRuleSet:
    """The extra tanh-GELU rule, with every operand order of its Add/Mul nodes."""
    return pattern.RewriteRuleSet([GeluTanhHalfFirst.rule()], commute=True)


def _one_element_vector(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None or tuple(tensor.shape) != (1,):
        return None
    return tensor.numpy()


class _WhereScalarBranch(pattern.RewriteRuleClassBase):
    """`Where(cond, c, x)` with `c` a one-element vector constant (`[0.]`), as the TorchScript exporter
    writes the NaN guard after an attention softmax: onnxscript's SDPA rule wants a scalar there. When
    `x` has rank ≥ 1, a `[1]` and a `[]` branch broadcast to the same result, so the constant is
    rewritten as a scalar."""

    def __init__(self, branch: int) -> None:
        super().__init__(f"WhereScalarBranch{branch}")
        self.branch = branch

    def pattern(self, op, cond, a, b):
        """Any Where; the check picks the branch."""
        return op.Where(cond, a, b)

    def check(self, context, cond, a, b, **_) -> pattern.MatchResult:
        """The chosen branch is a [1] constant and the other is at least 1-D."""
        result = pattern.MatchResult()
        const, other = (a, b) if self.branch == 1 else (b, a)
        if _one_element_vector(const) is None:
            return result.fail("the branch is not a one-element vector constant", const)
        if other.shape is None or len(other.shape) < 1:
            return result.fail("the other branch's rank is unknown or 0", other)
        return result

    def rewrite(self, op, cond, a, b):
        """The same Where with the constant as a scalar."""
        const = a if self.branch == 1 else b
        scalar = op.Constant(value=ir.tensor(_one_element_vector(const).reshape(())))
        return op.Where(cond, scalar, b) if self.branch == 1 else op.Where(cond, a, scalar)


def scalar_where_rules() -> pattern.RewriteRuleSet:
    """Both branches of Where: [1] constants to scalars."""
    return pattern.RewriteRuleSet([_WhereScalarBranch.rule(1), _WhereScalarBranch.rule(2)])


class SdpaToOnnxAttention(pattern.RewriteRuleClassBase):
    """onnxscript's intermediate `SDPA` op (what its sdpa rules make of softmax(Q·Kᵀ·scale + mask)·V) to the
    standard opset-23 `Attention` op, for targets that want no com.microsoft ops.

    Q, K, V are 4-D (batch, heads, sequence, head size); a key in (batch, sequence, heads, head size) is
    transposed first. ONNX Runtime's Attention needs the mask's second-to-last dim to be the query
    length, so a mask broadcast over it (Transformers' `[B, 1, 1, S]` padding mask) is expanded.
    """

    def pattern(self, op, query, key, value, key_format):
        """Any SDPA, with or without a mask."""
        return op.SDPA(query, key, value, key_format=key_format, _allow_other_inputs=True,
                       _outputs=["sdpa_output"], _domain="ai.onnxruntime._fusion")

    def check(self, context, query, key, value, key_format, sdpa_output, **_) -> pattern.MatchResult:
        """Q and V are 4-D and the key layout is one of the two the SDPA rules write."""
        result = pattern.MatchResult()
        for name, v in (("query", query), ("value", value)):
            if v.shape is not None and len(v.shape) != 4:
                return result.fail(f"the {name} is not 4-D (batch, heads, sequence, head size)", v)
        if key_format.value not in ("BHSd", "BSHd"):
            return result.fail(f"unexpected key_format {key_format.value}", key)
        return result

    def rewrite(self, op, query, key, value, key_format, sdpa_output):
        """Attention(Q, K, V, mask) with the SDPA's scale (None: 1/√head size, Attention's default too)."""
        node = sdpa_output.producer()
        scale = node.attributes.get("scale", None)
        if key_format.value == "BSHd":
            key = op.Transpose(key, perm=[0, 2, 1, 3])
        inputs = [query, key, value]
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            one = op.Constant(value_ints=[1])
            query_length = op.Shape(query, start=2, end=3)
            inputs.append(op.Expand(node.inputs[3], op.Concat(one, one, query_length, one, axis=0)))
        kwargs = {"scale": scale.as_float()} if scale is not None else {}
        return op.Attention(*inputs, **kwargs)


def sdpa_to_onnx_attention_rules() -> pattern.RewriteRuleSet:
    """The SDPA → standard Attention rule."""
    return pattern.RewriteRuleSet([SdpaToOnnxAttention.rule()])


class DivOneToReciprocal(pattern.RewriteRuleClassBase):
    """`Div(1, x)` to `Reciprocal(x)`: the TorchScript exporter writes `torch.rsqrt` in an RMSNorm as
    `Div(1, Sqrt(...))`, where onnxscript's RMSNorm rules look for `Reciprocal(Sqrt(...))`. Exact: both
    compute 1/x."""

    def pattern(self, op, one, x):
        """Div with a constant numerator."""
        return op.Div(one, x)

    def check(self, context, one, x, **_) -> pattern.MatchResult:
        """The numerator is a scalar (or one-element) constant equal to 1, and broadcasting keeps x's shape."""
        result = pattern.MatchResult()
        tensor = ir.convenience.get_const_tensor(one)
        if tensor is None or tensor.size != 1 or float(tensor.numpy().reshape(())) != 1.0:
            return result.fail("the numerator is not the constant 1", one)
        if len(tensor.shape) > 0 and (x.shape is None or len(x.shape) < len(tensor.shape)):
            return result.fail("a [1]-shaped numerator could change the rank of the result", x)
        return result

    def rewrite(self, op, one, x):
        """Reciprocal(x)."""
        return op.Reciprocal(x)


def reciprocal_rules() -> pattern.RewriteRuleSet:
    """Div(1, x) → Reciprocal(x)."""
    return pattern.RewriteRuleSet([DivOneToReciprocal.rule()])


class ScoreBiasMask(pattern.RewriteRuleClassBase):
    """`Softmax((scores + position_bias) + mask)` to `Softmax(scores + (position_bias + mask))`: MPNet (and
    T5-style relative attention) adds a relative-position bias and then the padding mask to the scaled
    scores, where onnxscript's SDPA rule takes one additive mask. Re-associating the two Adds (the sum
    differs by rounding only) gives it one mask: their sum."""

    def pattern(self, op, scores, bias, mask):
        """Two Adds on the attention scores, the outer one consumed by a Softmax (checked)."""
        return op.Add(op.Add(scores, bias), mask, _outputs=["summed"])

    def check(self, context, scores, bias, mask, summed, **_) -> pattern.MatchResult:
        """The scores come from Q·Kᵀ (a MatMul, maybe scaled), the sum feeds only a Softmax, and the bias and
        mask are neither of them computed from the scores."""
        result = pattern.MatchResult()
        producer = scores.producer()
        if producer is None or producer.op_type not in ("MatMul", "Div", "Mul"):
            return result.fail("the first operand is not attention scores (MatMul, or a scaled MatMul)", scores)
        if producer.op_type != "MatMul":
            inner = producer.inputs[0].producer() if producer.inputs[0] is not None else None
            if inner is None or inner.op_type != "MatMul":
                return result.fail("the scaled scores do not come from a MatMul", scores)
        uses = list(summed.uses())
        if len(uses) != 1 or uses[0][0].op_type != "Softmax":
            return result.fail("the sum does not feed a Softmax alone", summed)
        for name, v in (("bias", bias), ("mask", mask)):
            if v.shape is None or len(v.shape) != 4:
                return result.fail(f"the {name} is not 4-D", v)
        return result

    def rewrite(self, op, scores, bias, mask, **_):
        """One additive mask: bias + mask."""
        return op.Add(scores, op.Add(bias, mask))


def score_bias_mask_rules() -> pattern.RewriteRuleSet:
    """The re-association of a position bias and a mask added to attention scores."""
    return pattern.RewriteRuleSet([ScoreBiasMask.rule()])


class SplitAttentionOutputReshape(pattern.RewriteRuleClassBase):
    """`Reshape(Transpose(SDPA(...)), [-1, D])` to `Reshape(Reshape(Transpose(...), [0, 0, -1]), [-1, D])`.

    GPT-2's Conv1D, exported by dynamo as `addmm`, flattens the attention output straight to 2-D (batch ·
    sequence, hidden). onnxscript's MultiHeadAttention rules take the Reshape after the SDPA to be the
    (batch, sequence, hidden) one without checking it (a TODO in onnxscript's mha.py) and replace it by
    MHA's 3-D output, which then reaches a Gemm that wants 2-D: ONNX Runtime fails. Splitting the
    Reshape in two gives those rules the 3-D Reshape they assume; the 2-D one stays after it.
    """

    def pattern(self, op, attention, shape):
        """The Reshape of the transposed SDPA output."""
        return op.Reshape(op.Transpose(attention, perm=[0, 2, 1, 3]), shape, _outputs=["flat"])

    def check(self, context, attention, shape, flat, **_) -> pattern.MatchResult:
        """The attention comes from an SDPA op, and the Reshape's output is not 3-D."""
        result = pattern.MatchResult()
        producer = attention.producer()
        if producer is None or producer.op_type != "SDPA":
            return result.fail("the transposed value is not an SDPA output", attention)
        if flat.shape is None or len(flat.shape) == 3:
            return result.fail("the Reshape already gives (batch, sequence, hidden), or its rank is unknown", flat)
        return result

    def rewrite(self, op, attention, shape, **_):
        """The 3-D Reshape, then the original one."""
        merged = op.Reshape(op.Transpose(attention, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))
        return op.Reshape(merged, shape)


def split_output_reshape_rules() -> pattern.RewriteRuleSet:
    """The 2-D attention-output Reshape split into a 3-D one and the original."""
    return pattern.RewriteRuleSet([SplitAttentionOutputReshape.rule()])


def _rank(value: ir.Value | None) -> int | None:
    return len(value.shape) if value is not None and value.shape is not None else None


class BatchedHeadsAttention(pattern.RewriteRuleClassBase):
    """DeBERTa's attention on 3-D (batch · heads, sequence, head size) tensors, written back in 4-D.

    DeBERTa(-v2) reshapes Q, K, V from (batch, heads, sequence, head size) to (batch · heads, ...),
    computes `Q · (Kᵀ / scale)` with 3-D MatMuls, reshapes the scores to 4-D to fill the masked places
    with the lowest float (`masked_fill`, a Where), and goes back to 3-D after the Softmax. onnxscript's
    SDPA rule wants 4-D operands and an additive mask: this rule writes the same computation on the
    4-D tensors, the mask as `scores + Where(masked, lowest, 0)` (the softmax of either is the same), and
    reshapes the result to the 3-D shape the graph expects.
    """

    def pattern(self, op, q4, k4, v4, q_shape, k_shape, v_shape, scale, s_shape, cond, lowest, p_shape):
        """The 3-D form, from the three 4-D inputs to the 3-D attention output."""
        q3 = op.Reshape(q4, q_shape, _outputs=["q3"])
        k3 = op.Reshape(k4, k_shape)
        v3 = op.Reshape(v4, v_shape)
        scores = op.MatMul(q3, op.Div(op.Transpose(k3, perm=[0, 2, 1]), scale))
        masked = op.Where(cond, lowest, op.Reshape(scores, s_shape))
        probs = op.Reshape(op.Softmax(masked, axis=-1), p_shape)
        return op.MatMul(probs, v3)

    def check(self, context, q4, k4, v4, q3, scale, lowest, **_) -> pattern.MatchResult:
        """4-D Q/K/V of the same rank-4 layout, a scalar scale and a large negative fill value."""
        result = pattern.MatchResult()
        for name, v in (("query", q4), ("key", k4), ("value", v4)):
            if _rank(v) != 4:
                return result.fail(f"the {name} before the 3-D reshape is not 4-D", v)
        if _rank(q3) != 3 or q3.shape[1:] != q4.shape[2:]:
            return result.fail("the query reshape does not merge batch and heads", q3)
        for name, v in (("scale", scale), ("fill value", lowest)):
            tensor = ir.convenience.get_const_tensor(v)
            if tensor is None or tensor.size != 1:
                return result.fail(f"the {name} is not a constant scalar", v)
        if float(ir.convenience.get_const_tensor(lowest).numpy().reshape(())) > -1e4:
            return result.fail("the masked_fill value is not a large negative number", lowest)
        return result

    def rewrite(self, op, q4, k4, v4, scale, cond, lowest, **_):
        """softmax(Q·(Kᵀ/scale) + Where(cond, lowest, 0))·V in 4-D, reshaped to (-1, sequence, head size)."""
        fill = ir.convenience.get_const_tensor(lowest).numpy()
        zero = op.Constant(value=ir.tensor(np.zeros((), dtype=fill.dtype)))
        if fill.dtype in (np.float32, np.float64):
            # -1e30, not the lowest float: ONNX Runtime's Attention gives zeros for a query row masked
            # entirely with the lowest float (a padded position), where Softmax gives the uniform row
            # DeBERTa computes. Any masked score still underflows to 0 after the Softmax.
            lowest = op.Constant(value=ir.tensor(np.array(-1e30, dtype=fill.dtype)))
        scores = op.MatMul(q4, op.Div(op.Transpose(k4, perm=[0, 1, 3, 2]), scale))
        probs = op.Softmax(op.Add(scores, op.Where(cond, lowest, zero)), axis=-1)
        out4 = op.MatMul(probs, v4)
        shape3 = op.Concat(op.Constant(value_ints=[-1]), op.Shape(out4, start=2), axis=0)
        return op.Reshape(out4, shape3)


def batched_heads_rules() -> pattern.RewriteRuleSet:
    """DeBERTa's 3-D attention to the 4-D form the SDPA rules match. The TorchScript export reads shapes
    off the intermediate 3-D tensors, so the matched nodes are left in place (dead ones are removed later)."""
    return pattern.RewriteRuleSet([BatchedHeadsAttention.rule(remove_nodes=False)])
