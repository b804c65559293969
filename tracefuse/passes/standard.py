"""Fusions to standard ONNX ops only (no com.microsoft domain), for targets that ask for standard ops.

- `fuse-attention-standard`: attention to the opset-23 `Attention` op (onnxscript's SDPA rules find the
  block; tracefuse's rule writes the standard op).
- `fuse-norm-standard`: decomposed LayerNorm to `LayerNormalization` (opset 17) and RMSNorm to the
  opset-23 `RMSNormalization`.
- `fuse-layer-norm`: LayerNormalization only, the opset left as it is (TensorRT).

An opset-23 op needs the graph's default-domain opset import at 23 or more. When the graph holds a
candidate block and imports an older opset, the pass converts the graph to opset 23 first
(onnxscript's version converter, with ONNX's as fallback) and records the change in its stats; a
graph with nothing to fuse keeps its opset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import onnx_ir as ir

from tracefuse.passes.base import PassResult, register_pass
from tracefuse.passes.fusions import (
    FusionPass,
    Stage,
    _nodes,
    _ort,
    _tracefuse_rules,
    attention_candidates,
    norm_candidates,
)

logger = logging.getLogger(__name__)

STANDARD_OPSET = 23


def default_opset(model: ir.Model) -> int:
    """The version of the default ONNX domain the model imports (0 when it imports none)."""
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))


def ensure_opset(model: ir.Model, version: int) -> dict[str, Any]:
    """Convert `model` in place to at least `version` of the default domain; returns {"from", "to"} (and
    "error" when the conversion failed, leaving the model unchanged)."""
    before = default_opset(model)
    if before >= version:
        return {"from": before, "to": before}
    from onnxscript import version_converter

    try:
        version_converter.convert_version(model, version, fallback=True)
    except Exception as exc:  # noqa: BLE001 - the converters raise bare exceptions on ops they cannot adapt
        logger.warning("cannot convert the graph from opset %d to %d: %s", before, version, exc)
        return {"from": before, "to": before, "error": str(exc).splitlines()[0][:200] if str(exc) else repr(exc)}
    model.opset_imports[""] = max(default_opset(model), version)
    model.opset_imports.pop("ai.onnx", None)
    return {"from": before, "to": default_opset(model)}


def rms_candidates(model: ir.Model) -> int:
    """RMSNorm blocks: `ReduceMean(x²)` of an x that is not centred (a LayerNorm's variance is), plus
    RMSNormalization / SimplifiedLayerNormalization ops already present."""
    layer_norm_like = sum(1 for n in _nodes(model) if n.op_type in ("LayerNormalization", "SkipLayerNormalization"))
    decomposed_layer_norm = sum(1 for n in _nodes(model) if n.op_type == "ReduceMean" and any(
        use.op_type == "Sub" for use, _ in n.outputs[0].uses()))
    return norm_candidates(model) - layer_norm_like - decomposed_layer_norm


class OpsetFusionPass(FusionPass):
    """A FusionPass whose `opset_stages` emit ops of a newer opset: when `needs(model)` finds a candidate
    and the graph's opset is older, the graph is converted first; otherwise those stages are skipped."""

    def __init__(self, *args: Any, opset: int, opset_stages: tuple[Stage, ...],
                 needs: Callable[[ir.Model], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opset = opset
        self.base_stages = self.stages
        self.opset_stages = opset_stages
        self.needs = needs

    def __call__(self, model: ir.Model, *, explain: bool = False) -> PassResult:
        """Convert the opset when a candidate needs it, then fuse; stats["opset"] says what changed."""
        opset: dict[str, Any] = {"from": default_opset(model), "to": default_opset(model)}
        self.stages = self.base_stages
        if self.needs(model):
            opset = ensure_opset(model, self.opset)
            if "error" not in opset:
                self.stages = self.base_stages + self.opset_stages
        result = super().__call__(model, explain=explain)
        result.stats["opset"] = opset
        return result


_SDPA = Stage("sdpa", _ort("ort_fusions.sdpa", "sdpa_rules"), shape_inference=True)
ATTENTION_STAGES = (
    Stage("scalar_where", lambda: _tracefuse_rules().scalar_where_rules()),
    Stage("score_bias_mask", lambda: _tracefuse_rules().score_bias_mask_rules()),
    Stage("batched_heads", lambda: _tracefuse_rules().batched_heads_rules(), shape_inference=True),
    _SDPA,
    Stage("onnx_attention", lambda: _tracefuse_rules().sdpa_to_onnx_attention_rules()),
)
LAYER_NORM_STAGES = (Stage("layer_norm", _ort("rules.fusion._layer_norm", "layer_normalization_ruleset")),)
RMS_NORM_STAGES = (Stage("one_over", lambda: _tracefuse_rules().reciprocal_rules()),
                   Stage("rms_norm", _ort("rules.fusion._rms_normalization", "rms_normalization_ruleset")))

register_pass(
    "fuse-attention-standard",
    lambda: OpsetFusionPass("fuse-attention-standard", "attention", (), attention_candidates, ("Attention",),
                            prepare=True, symbolic_shapes=True, opset=STANDARD_OPSET,
                            opset_stages=ATTENTION_STAGES, needs=attention_candidates),
    "attention to the standard opset-23 Attention op (converts the graph to opset 23 when it has attention)")
register_pass(
    "fuse-norm-standard",
    lambda: OpsetFusionPass("fuse-norm-standard", "norm", LAYER_NORM_STAGES, norm_candidates,
                            ("LayerNormalization", "RMSNormalization"), prepare=True, opset=STANDARD_OPSET,
                            opset_stages=RMS_NORM_STAGES, needs=rms_candidates),
    "LayerNorm to LayerNormalization and RMSNorm to the opset-23 RMSNormalization (no com.microsoft ops; "
    "converts the graph to opset 23 only when it has an RMSNorm)")
register_pass(
    "fuse-layer-norm",
    lambda: FusionPass("fuse-layer-norm", "norm", LAYER_NORM_STAGES, norm_candidates, ("LayerNormalization",),
                       prepare=True),
    "decomposed LayerNorm to the standard LayerNormalization op, opset unchanged (TensorRT)")
