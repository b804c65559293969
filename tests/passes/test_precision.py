"""fp16: float16 weights with float32 islands and io, validated with its own looser tolerance."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from tests.passes import graphs as g
from tracefuse.passes.base import get_pass
from tracefuse.passes.manager import Pipeline


def test_fp16_keeps_io_float32_and_norms_in_float32():
    model = g.layer_norm(residual=True)
    feeds = g.feeds_for(model)
    expected = g.run(model, feeds)[0]
    fused = get_pass("fuse-norm")(model).model
    result = get_pass("fp16")(fused)
    out = result.model
    assert all(v.dtype == ir.DataType.FLOAT for v in list(out.graph.inputs) + list(out.graph.outputs))
    assert result.stats["fp32_islands"] == {"com.microsoft::SkipLayerNormalization": 1}
    norm = next(n for n in out.graph if n.op_type == "SkipLayerNormalization")
    assert all(v.dtype == ir.DataType.FLOAT for v in norm.inputs if v is not None)  # the island stays fp32
    actual = g.run(out, feeds)[0]
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-2, rtol=1e-2)


def test_fp16_converts_weights_and_check_uses_its_tolerance():
    model = g.erf_gelu(bias=True)
    feeds = g.feeds_for(model)
    result = Pipeline.from_names(["fuse-gelu", "fp16"]).run(model, check_cases=[("c", feeds)])
    fp16 = result.steps[1]
    assert fp16["stats"]["fp16_initializers"] >= 1 and fp16["stats"]["casts_added"] >= 2
    assert fp16["check"]["passed"] and fp16["check"]["tolerance"] == {"atol": 1e-2, "rtol": 1e-2}
    assert 0 < fp16["check"]["max_abs"] < 1e-2  # float16 rounding is visible, and within tolerance
