"""Fusion passes on onnxscript's rewriter: `fuse-attention`, `fuse-norm`, `fuse-gelu`, `fuse-matmul` (ONNX
Runtime's com.microsoft ops), `fuse-norm-cpu` / `fuse-gelu-cpu` (without the fused ops ONNX Runtime's CPU
kernels run slower); the standard-op variants are in `standard.py`.

Each pass is a list of stages (onnxscript rule sets, applied in order) plus two counters: how many
candidate blocks the graph holds before the pass (`found`) and how many fused ops it holds after
(`fused`). With `explain`, every stage is replayed under onnxscript's MatchingTracer on the graph as
left by the pass, and the best failed match of each rule is reported: the rule, the node it was
rooted at, and the reason the pattern or its check failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from tracefuse.passes.base import PassResult, register_pass

logger = logging.getLogger(__name__)

MAX_REASONS = 12

ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention")
NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
            "SkipSimplifiedLayerNormalization", "RMSNormalization")
GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


@dataclass(frozen=True)
class Stage:
    """One step of a fusion: a name and a function returning onnxscript rule set(s) (imported lazily)."""

    name: str
    rules: Callable[[], Any]
    shape_inference: bool = False


def _nodes(model: ir.Model) -> list[ir.Node]:
    return list(ir.traversal.RecursiveGraphIterator(model.graph))


def _count(model: ir.Model, ops: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in _nodes(model):
        if node.op_type in ops and node.domain in ("", "ai.onnx", "com.microsoft"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _const_scalar(value: ir.Value | None) -> float | None:
    if value is None or value.const_value is None or value.const_value.size != 1:
        return None
    return float(value.const_value.numpy().reshape(()))


def _producer_op(value: ir.Value | None) -> str | None:
    node = value.producer() if value is not None else None
    return node.op_type if node is not None else None


def attention_candidates(model: ir.Model) -> int:
    """Attention blocks not yet fused: one Softmax (or an SDPA function call) per block, plus fused ones."""
    unfused = sum(1 for n in _nodes(model) if n.op_type in ("Softmax", "SDPA"))
    return unfused + sum(_count(model, ATTENTION_OPS).values())


def norm_candidates(model: ir.Model) -> int:
    """Norm blocks: norm ops already present, plus decomposed LayerNorm (`x - ReduceMean(x)`) and RMSNorm
    (`ReduceMean(x²)` of an x that is not itself centred) patterns."""
    found = sum(_count(model, NORM_OPS).values())
    for node in _nodes(model):
        if node.op_type != "ReduceMean":
            continue
        if any(use.op_type == "Sub" for use, _ in node.outputs[0].uses()):
            found += 1  # the mean of a decomposed LayerNorm
            continue
        src = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        squared = src is not None and (
            (src.op_type == "Pow" and _const_scalar(src.inputs[1]) == 2.0)
            or (src.op_type == "Mul" and src.inputs[0] is src.inputs[1]))
        if squared and _producer_op(src.inputs[0]) != "Sub":
            found += 1  # the mean square of a decomposed RMSNorm
    return found


def matmul_candidates(model: ir.Model) -> int:
    """MatMuls that FusedMatMul can absorb: fed by a Transpose, or scaled by a Div / Mul, plus FusedMatMuls."""
    found = sum(_count(model, ("FusedMatMul",)).values())
    for node in _nodes(model):
        if node.op_type != "MatMul":
            continue
        fed = any(_producer_op(v) == "Transpose" for v in node.inputs)
        scaled = any(use.op_type in ("Div", "Mul") and _const_scalar(use.inputs[1]) is not None
                     for use, _ in node.outputs[0].uses())
        found += int(fed or scaled)
    return found


def gelu_candidates(model: ir.Model) -> int:
    """GELU blocks: Erf (exact GELU), Pow(x, 3) (tanh approximation), plus GELU ops already present."""
    found = sum(_count(model, GELU_OPS).values())
    for node in _nodes(model):
        if node.op_type == "Erf" or (node.op_type == "Pow" and _const_scalar(node.inputs[1]) == 3.0):
            found += 1
    return found


class FusionPass:
    """A fusion pass: stages of onnxscript rules, a candidate counter and the fused op types."""

    def __init__(self, name: str, kind: str, stages: tuple[Stage, ...], candidates: Callable[[ir.Model], int],
                 fused_ops: tuple[str, ...], prepare: bool = False, symbolic_shapes: bool = False,
                 ort_disabled_optimizers: tuple[str, ...] = ()) -> None:
        self.name = name
        # ONNX Runtime's own load-time fusions that would undo this pass's choice; the artifact's manifest
        # asks runtimes to disable them (Manifest.runtime_hints).
        self.ort_disabled_optimizers = ort_disabled_optimizers
        self.kind = kind
        self.stages = stages
        self.candidates = candidates
        self.fused_ops = fused_ops
        self.prepare = prepare
        self.symbolic_shapes = symbolic_shapes

    def __call__(self, model: ir.Model, *, explain: bool = False) -> PassResult:
        """Apply the stages; stats hold found / fused, matches per stage, ops after, and reasons with explain."""
        if self.symbolic_shapes:
            model = _symbolic_shapes(model)
        if self.prepare:
            _prepare(model)
        found = self.candidates(model)
        matches: dict[str, int] = {}
        for stage in self.stages:
            matches[stage.name] = _apply(model, stage)
        _finish(model)
        by_op = _count(model, self.fused_ops)
        fused = min(sum(by_op.values()), found) if found else sum(by_op.values())
        stats: dict[str, Any] = {"kind": self.kind, "found": found, "fused": fused,
                                 "report": f"{self.kind}: {fused}/{found}", "matches": matches, "fused_ops": by_op}
        if explain:
            stats["explain"] = self.explain(model) if fused < found else []
        return PassResult(model, stats)

    def explain(self, model: ir.Model) -> list[dict[str, Any]]:
        """Why the remaining blocks were not fused: each stage's best failed match per rule (no rewrite)."""
        from onnxscript.rewriter._basics import MatchingTracer, MatchStatus

        reasons: list[dict[str, Any]] = []
        for stage in self.stages:
            tracer = MatchingTracer()
            for ruleset in _rulesets(stage):
                ruleset.apply_to_model(model, tracer=tracer)
            entries = []
            for rule, infos in tracer.best_matches_map.items():
                for info in infos:
                    if info.status == MatchStatus.SUCCESS:
                        continue
                    entries.append({
                        "stage": stage.name, "rule": getattr(rule, "name", None) or type(rule).__name__,
                        "node": info.root_node.name or info.root_node.outputs[0].name,
                        "op": info.root_node.op_type, "status": info.status.name,
                        "matched_nodes": len(info.match_result.nodes),
                        "reason": info.match_result.reason or "the pattern did not match the graph here",
                    })
            reasons.extend(entries)
        # The deepest partial matches come first: they are the blocks that nearly fused.
        reasons.sort(key=lambda e: -e["matched_nodes"])
        return reasons[:MAX_REASONS]


def _rulesets(stage: Stage) -> list[Any]:
    rules = stage.rules()
    return list(rules) if isinstance(rules, (list, tuple)) else [rules]


def _apply(model: ir.Model, stage: Stage) -> int:
    count = sum(rs.apply_to_model(model) for rs in _rulesets(stage))
    if stage.shape_inference:
        common_passes.ShapeInferencePass()(model)
    logger.debug("stage %s: %d matches", stage.name, count)
    return count


def _prepare(model: ir.Model) -> None:
    # The attention rules check shapes: infer them, and fold the shape arithmetic they look through.
    import onnxscript.optimizer as optimizer
    from onnxscript.rewriter.ort_fusions import shape_optimization

    common_passes.AddDefaultAttributesPass()(model)  # the norm rules match default attributes explicitly
    common_passes.ShapeInferencePass()(model)
    optimizer.optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimizer.optimize(model)


def _symbolic_shapes(model: ir.Model) -> ir.Model:
    """ONNX Runtime's symbolic shape inference, which merges the sequence dims ONNX's own inference leaves
    unrelated in a TorchScript export (`unk__13` vs `unk__14`), so the attention rules' shape checks hold.
    Returns a new model; on failure the model is returned unchanged."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(ir.serde.serialize_model(model), auto_merge=True)
        return ir.serde.deserialize_model(inferred)
    except Exception as exc:  # noqa: BLE001 - the tool raises bare Exceptions on ops it does not know
        logger.info("symbolic shape inference failed (%s); using ONNX shape inference only", exc)
        return model


def _finish(model: ir.Model) -> None:
    # Inline the intermediate fusion functions a later stage did not consume; drop dead nodes.
    import onnxscript.optimizer as optimizer

    optimizer.optimize(model)
    common_passes.RemoveUnusedOpsetsPass()(model)


# ── stage rule sets (lazy imports keep `import tracefuse.passes` light) ────────────────────────────

def _ort(module: str, attr: str) -> Callable[[], Any]:
    def load():
        import importlib

        return getattr(importlib.import_module(f"onnxscript.rewriter.{module}"), attr)
    return load


def _tracefuse_rules():
    from tracefuse.passes import rules

    return rules


ATTENTION_STAGES = (
    Stage("scalar_where", lambda: _tracefuse_rules().scalar_where_rules()),
    Stage("score_bias_mask", lambda: _tracefuse_rules().score_bias_mask_rules()),
    Stage("batched_heads", lambda: _tracefuse_rules().batched_heads_rules(), shape_inference=True),
    Stage("rotary_embedding", _ort("ort_fusions.rotary_embedding", "rotary_embedding_rules")),
    Stage("cos_sin_cache", _ort("ort_fusions.cos_sin_cache", "cos_sin_cache_rules")),
    Stage("partial_rotary_embedding", _ort("ort_fusions.rotary_embedding", "partial_embedding_rules")),
    Stage("sdpa", _ort("ort_fusions.sdpa", "sdpa_rules"), shape_inference=True),
    Stage("split_output_reshape", lambda: _tracefuse_rules().split_output_reshape_rules(), shape_inference=True),
    Stage("gqa", _ort("ort_fusions.gqa", "gqa_rules")),
    Stage("packed_qkv_gqa", _ort("ort_fusions.gqa_packed_qkv", "fuse_qkv_gqa_rules")),
    Stage("mha_with_past", _ort("ort_fusions.mha", "mha_rules_with_past")),
    Stage("mha", _ort("ort_fusions.mha", "mha_rules_no_past")),
    Stage("mha_scale", _ort("ort_fusions.mha_scale", "_mha_scale_rules")),
    Stage("mha_bias", _ort("ort_fusions.mha_bias", "mha_bias_rules")),
    Stage("attention", _ort("ort_fusions.attention", "attention_rules")),
    Stage("sdpa_via_mha", _ort("ort_fusions.sdpa_via_mha", "_rules")),
)
NORM_STAGES = (
    Stage("layer_norm", _ort("rules.fusion._layer_norm", "layer_normalization_ruleset")),
    Stage("one_over", lambda: _tracefuse_rules().reciprocal_rules()),
    Stage("rms_norm", _ort("ort_fusions.rms_normalization", "rms_normalization_ruleset")),
    Stage("skip_layer_norm", _ort("ort_fusions.skip_normalization", "skip_layer_normalization_ruleset")),
    Stage("skip_rms_norm", _ort("ort_fusions.skip_normalization", "skip_rms_normalization_ruleset")),
)
# The `cpu` variants leave out the fused ops whose ONNX Runtime CPU kernels measured slower than the ops
# they replace (benchmarks/bench_kernels.py, ONNX Runtime 1.32, 2 threads, BERT-base shapes):
# SkipLayerNormalization ~5x Add + LayerNormalization, SkipSimplifiedLayerNormalization ~1.25x Add +
# SimplifiedLayerNormalization, BiasGelu ~1.35x Add + Gelu.
NORM_CPU_STAGES = tuple(s for s in NORM_STAGES if s.name not in ("skip_layer_norm", "skip_rms_norm"))
MATMUL_STAGES = (
    Stage("fused_matmul", lambda: _ort("ort_fusions.fused_matmul_rule_sets", "fused_matmul_rule_sets")()()),
)
GELU_STAGES = (
    Stage("erf_gelu", _ort("ort_fusions.erfgelu", "rules")),
    Stage("gelu", _ort("ort_fusions.gelu", "gelu_rules")),
    Stage("gelu_tanh_hf", lambda: _tracefuse_rules().gelu_tanh_rules()),
    Stage("bias_gelu", _ort("ort_fusions.bias_gelu", "bias_gelu_rules")),
)
GELU_CPU_STAGES = tuple(s for s in GELU_STAGES if s.name != "bias_gelu")

register_pass("fuse-attention", lambda: FusionPass("fuse-attention", "attention", ATTENTION_STAGES,
                                                   attention_candidates, ATTENTION_OPS, prepare=True,
                                                   symbolic_shapes=True),
              "attention (and rotary embeddings) to ONNX Runtime Attention / MultiHeadAttention / GroupQueryAttention")
register_pass("fuse-norm", lambda: FusionPass("fuse-norm", "norm", NORM_STAGES, norm_candidates, NORM_OPS,
                                              prepare=True),
              "LayerNorm / RMSNorm (with the residual Add) to LayerNormalization, SkipLayerNormalization, "
              "SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization")
register_pass("fuse-norm-cpu", lambda: FusionPass("fuse-norm-cpu", "norm", NORM_CPU_STAGES, norm_candidates,
                                                  NORM_OPS, prepare=True,
                                                  ort_disabled_optimizers=("SkipLayerNormFusion",)),
              "LayerNorm / RMSNorm to LayerNormalization / SimplifiedLayerNormalization, the residual Add kept "
              "(the Skip* ops are slower on ONNX Runtime CPU)")
register_pass("fuse-matmul", lambda: FusionPass("fuse-matmul", "matmul", MATMUL_STAGES, matmul_candidates,
                                                ("FusedMatMul",)),
              "Transpose / scale around a MatMul into ONNX Runtime FusedMatMul (transA/transB/alpha)")
register_pass("fuse-gelu", lambda: FusionPass("fuse-gelu", "gelu", GELU_STAGES, gelu_candidates, GELU_OPS,
                                              prepare=True),
              "exact and tanh GELU (with the preceding bias Add) to ONNX Runtime Gelu / FastGelu / BiasGelu")
register_pass("fuse-gelu-cpu", lambda: FusionPass("fuse-gelu-cpu", "gelu", GELU_CPU_STAGES, gelu_candidates,
                                                  GELU_OPS, prepare=True, ort_disabled_optimizers=("BiasGeluFusion",)),
              "exact and tanh GELU to ONNX Runtime Gelu / FastGelu, the bias Add kept (BiasGelu is slower on "
              "ONNX Runtime CPU)")
