"""`cleanup`: constant folding, dead-node and identity elimination, common subexpressions, shape-op
simplification — onnxscript's optimizer and onnx-ir's common passes, run in a fixed order."""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from tracefuse.graphs.onnx_file import op_histogram
from tracefuse.passes.base import FunctionPass, PassResult, register_pass
from tracefuse.passes.shapes import simplify_shapes

logger = logging.getLogger(__name__)


def cleanup(model: ir.Model, *, explain: bool = False) -> PassResult:
    """Fold constants, drop identities, dead nodes and duplicate subexpressions, simplify shape arithmetic.

    Stats: nodes before/after and the ops each step removed (by type).
    """
    import onnxscript.optimizer as optimizer
    from onnxscript.rewriter.ort_fusions import shape_optimization

    before = op_histogram(model)
    steps: dict[str, int] = {}

    def measure(name: str, fn) -> None:
        n = _nodes(model)
        fn()
        steps[name] = n - _nodes(model)

    measure("identity_elimination", lambda: common_passes.IdentityEliminationPass()(model))
    measure("constant_folding", lambda: optimizer.optimize(model, num_iterations=2))
    measure("shape_simplification", lambda: (simplify_shapes(model),
                                             shape_optimization.rules.apply_to_model(model)))
    measure("common_subexpressions", lambda: common_passes.CommonSubexpressionEliminationPass()(model))
    measure("dead_nodes", lambda: (common_passes.RemoveUnusedNodesPass()(model),
                                   common_passes.RemoveUnusedFunctionsPass()(model)))
    measure("constant_folding_2", lambda: optimizer.optimize(model, num_iterations=1))
    after = op_histogram(model)
    removed = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
    stats: dict[str, Any] = {"nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
                             "removed_by_step": steps, "removed_ops": removed}
    return PassResult(model, stats)


def _nodes(model: ir.Model) -> int:
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


register_pass("cleanup", lambda: FunctionPass("cleanup", cleanup),
              "constant folding, identity / dead-node / duplicate elimination, shape-op simplification")
