"""Gated-delta-rule linear attention (Qwen3.5, Qwen3-Next, OLMo-Hybrid, …) as a few ONNX MatMuls.

Those models' chunked attention solves a unit lower-triangular system per chunk. In eager mode Transformers
calls `torch.linalg.solve_triangular`; under torch.export it switches to a forward substitution unrolled over
the 64 rows of a chunk: about 600 graph nodes per layer, which made a 2-layer tiny model take more than a
minute to export (most of it in torch.export's decompositions) and leaves 63 scatter steps in the graph.

During a dynamo export, `solve_triangular_eager()` gives each such model module a copy of its
`torch_chunk_gated_delta_rule` that takes the eager branch, so the graph holds one `linalg_solve_triangular`
node; `solve_triangular_translation()` lowers that node to ONNX. For a unit triangular A = I - N (N strictly
triangular, so nilpotent: N^n = 0), A^-1 = I + N + … + N^(n-1) = (I + N)(I + N^2)(I + N^4)…, which is
ceil(log2 n) steps of at most two MatMuls: 11 MatMuls for a 64-row chunk.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

_FUNCTION = "torch_chunk_gated_delta_rule"
_FLAG = "is_torchdynamo_exporting"


def _takes_exporting_branch(function: object) -> bool:
    code = getattr(inspect.unwrap(function), "__code__", None) if callable(function) else None
    return code is not None and _FLAG in code.co_names and "solve_triangular" in code.co_names


def _eager_copy(function: object) -> types.FunctionType:
    plain = inspect.unwrap(function)
    namespace = {**plain.__globals__, _FLAG: lambda: False}
    copy = types.FunctionType(plain.__code__, namespace, plain.__name__, plain.__defaults__, plain.__closure__)
    copy.__kwdefaults__ = plain.__kwdefaults__
    return copy


@contextlib.contextmanager
def solve_triangular_eager() -> Iterator[list[str]]:
    """While open, every loaded Transformers model module whose `torch_chunk_gated_delta_rule` switches to an
    unrolled forward substitution under torch.export calls `torch.linalg.solve_triangular` instead (the eager
    branch). Yields the names of the modules changed; restores them on exit."""
    changed: list[tuple[types.ModuleType, object]] = []
    for name, module in list(sys.modules.items()):
        function = getattr(module, _FUNCTION, None) if name.startswith("transformers.models.") else None
        if function is not None and _takes_exporting_branch(function):
            changed.append((module, function))
            setattr(module, _FUNCTION, _eager_copy(function))
    try:
        yield [module.__name__ for module, _ in changed]
    finally:
        for module, function in changed:
            setattr(module, _FUNCTION, function)


def solve_triangular_translation(a, b, upper: bool, left: bool = True, unitriangular: bool = False):
    """ONNX lowering of `aten.linalg_solve_triangular` for a unit triangular `a` with a static row count,
    solved on the left (X = a^-1 b): the product (I + N)(I + N^2)(I + N^4)… applied to `b`, N = I - a."""
    from onnxscript.onnx_opset import opset18 as op

    size = a.shape[-1] if a.shape is not None else None
    if not unitriangular or not left or not isinstance(size, int):
        raise NotImplementedError(
            "linalg_solve_triangular exports to ONNX only for a unit triangular matrix with a static size, "
            f"solved on the left (got unitriangular={unitriangular}, left={left}, size={size})")
    # N = -(strict triangle of a); the diagonal of a is taken as ones (unitriangular)
    power = op.Neg(op.Trilu(a, op.Constant(value_int=1 if upper else -1), upper=1 if upper else 0))
    return apply_unit_inverse(power, b, size, op.MatMul, op.Add)


def apply_unit_inverse(strict: Any, b: Any, size: int, matmul: Callable, add: Callable) -> Any:
    """(I + N)(I + N^2)(I + N^4)… b for the strictly triangular N (`strict`) of an n x n system, n = `size`:
    ceil(log2 n) steps of at most two products, built with the graph builder's `matmul` and `add` (onnxscript's
    ops here, the TorchScript exporter's `g.op` in torchscript_symbolics)."""
    power, x = strict, b
    steps = max(1, math.ceil(math.log2(size)))
    for step in range(steps):
        x = add(x, matmul(power, x))
        if step + 1 < steps:
            power = matmul(power, power)
    return x


def translations() -> dict:
    """The custom translation table entries of this module, for `torch.onnx.export`."""
    return {torch.ops.aten.linalg_solve_triangular.default: solve_triangular_translation}
