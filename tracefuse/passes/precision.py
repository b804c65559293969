"""Precision passes: `fp16` — float16 weights and compute, with float32 islands where precision needs them
(the reductions of norms and softmax), graph inputs and outputs kept float32 (keep_io_types).

Built on ONNX Runtime's converter (onnxruntime.transformers.float16), which inserts the Casts around
the blocked ops. The pass declares a looser tolerance; a pipeline in check mode and the new
artifact's manifest use it from then on.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir

from tracefuse.graphs.onnx_file import op_histogram
from tracefuse.passes.base import PassResult, register_pass

logger = logging.getLogger(__name__)

# Ops computed in float32: norms and softmax reduce over a whole axis, where float16 loses the most.
FP32_ISLANDS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                "SkipSimplifiedLayerNormalization", "RMSNormalization", "Softmax", "ReduceMean", "ReduceSum",
                "Pow", "Sqrt", "Erf", "Range", "CumSum")
FP16_TOLERANCE = {"atol": 1e-2, "rtol": 1e-2}


class Fp16Pass:
    """Convert float32 to float16 outside the float32 islands; inputs and outputs stay float32."""

    name = "fp16"
    tolerance = FP16_TOLERANCE

    def __init__(self, keep_io_types: bool = True, islands: tuple[str, ...] = FP32_ISLANDS) -> None:
        self.keep_io_types = keep_io_types
        self.islands = islands

    def __call__(self, model: ir.Model, *, explain: bool = False) -> PassResult:
        """Return the converted model; stats count the Casts inserted and the ops left in float32."""
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        before = op_histogram(model)
        proto = ir.serde.serialize_model(model)
        block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(self.islands))
        converted = convert_float_to_float16(proto, keep_io_types=self.keep_io_types, op_block_list=block,
                                             disable_shape_infer=False)
        _drop_duplicate_casts(converted.graph)
        out = ir.serde.deserialize_model(converted)
        after = op_histogram(out)
        fp16_weights = sum(1 for v in out.graph.initializers.values() if v.dtype == ir.DataType.FLOAT16)
        stats: dict[str, Any] = {
            "keep_io_types": self.keep_io_types, "fp16_initializers": fp16_weights,
            "casts_added": after.get("Cast", 0) - before.get("Cast", 0),
            "fp32_islands": {op: n for op, n in after.items() if op.split("::")[-1] in self.islands},
            "tolerance": dict(self.tolerance),
        }
        return PassResult(out, stats)


def _drop_duplicate_casts(graph) -> None:
    # The converter inserts one Cast per use of a float32 weight feeding a float32 island; when a weight
    # feeds two islands, both Casts declare the same output. They are identical: keep the first.
    seen: set[str] = set()
    keep = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


register_pass("fp16", Fp16Pass, "float16 weights and compute, float32 islands for norms / softmax, float32 io")
