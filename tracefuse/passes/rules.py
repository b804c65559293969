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
