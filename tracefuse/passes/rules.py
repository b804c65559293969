"""Rewrite rules tracefuse adds where onnxscript's own rules miss a pattern a supported model produces."""

from __future__ import annotations

import math

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
