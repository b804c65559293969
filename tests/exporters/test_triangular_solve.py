"""Gated-delta-rule attention exports as a triangular solve lowered to a few MatMuls, not 63 scatter steps."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tracefuse.exporters.triangular_solve import solve_triangular_eager, translations


def _onnx(module: torch.nn.Module, args: tuple, path) -> ort.InferenceSession:
    names = [f"x{i}" for i in range(len(args))]
    with solve_triangular_eager():
        program = torch.onnx.export(module, args, dynamo=True, input_names=names, verbose=False,
                                    custom_translation_table=translations())
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class _Solve(torch.nn.Module):
    def __init__(self, upper: bool):
        super().__init__()
        self.upper = upper

    def forward(self, a, b):
        return torch.linalg.solve_triangular(a, b, upper=self.upper, unitriangular=True)


@pytest.mark.parametrize("upper", [False, True])
def test_unit_triangular_solve_matches_torch(tmp_path, upper):
    torch.manual_seed(0)
    # a random diagonal that unitriangular=True must ignore, and rows that do not fill a power of two
    a, b = torch.randn(2, 3, 37, 37) * 0.3, torch.randn(2, 3, 37, 5)
    session = _onnx(_Solve(upper), (a, b), tmp_path / "solve.onnx")
    got = session.run(None, {"x0": a.numpy(), "x1": b.numpy()})[0]
    want = torch.linalg.solve_triangular(a, b, upper=upper, unitriangular=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    ops = [node.op_type for node in __import__("onnx").load(str(tmp_path / "solve.onnx")).graph.node]
    assert ops.count("MatMul") == 2 * 6 - 1  # ceil(log2 37) = 6 doubling steps


def test_a_solve_it_cannot_lower_says_why(tmp_path):
    class General(torch.nn.Module):
        def forward(self, a, b):
            return torch.linalg.solve_triangular(a, b, upper=False)

    with pytest.raises(Exception, match="unit triangular matrix"):
        _onnx(General(), (torch.eye(4) + torch.rand(4, 4).tril(), torch.rand(4, 2)), tmp_path / "general.onnx")


def test_gated_delta_rule_exports_without_the_unrolled_substitution(tmp_path):
    from transformers.models.qwen3_5 import modeling_qwen3_5 as qwen

    original = qwen.torch_chunk_gated_delta_rule

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, g, beta):
            return qwen.torch_chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)[0]

    torch.manual_seed(0)
    shape = (1, 70, 2, 8)  # two chunks of 64
    args = (torch.randn(shape), torch.randn(shape), torch.randn(shape), -torch.rand(shape[:3]), torch.rand(shape[:3]))
    session = _onnx(Attention(), args, tmp_path / "gdr.onnx")
    assert qwen.torch_chunk_gated_delta_rule is original  # restored after the export
    got = session.run(None, {f"x{i}": a.numpy() for i, a in enumerate(args)})[0]
    np.testing.assert_allclose(got, Attention()(*args).numpy(), rtol=1e-3, atol=1e-5)
    ops = [node.op_type for node in __import__("onnx").load(str(tmp_path / "gdr.onnx")).graph.node]
    assert "ScatterND" not in ops and len(ops) < 200, f"{len(ops)} nodes"


def test_only_modules_with_the_exporting_branch_are_changed():
    import transformers.models.kimi_linear.modeling_kimi_linear  # noqa: F401 - its loop has no eager branch
    import transformers.models.qwen3_next.modeling_qwen3_next  # noqa: F401

    module = sys.modules["transformers.models.qwen3_next.modeling_qwen3_next"]
    original = module.torch_chunk_gated_delta_rule
    with solve_triangular_eager() as changed:
        assert "transformers.models.qwen3_next.modeling_qwen3_next" in changed
        assert "transformers.models.kimi_linear.modeling_kimi_linear" not in changed
        assert module.torch_chunk_gated_delta_rule.__globals__["is_torchdynamo_exporting"]() is False
        assert module.is_torchdynamo_exporting is not module.torch_chunk_gated_delta_rule.__globals__[
            "is_torchdynamo_exporting"]  # the module's own flag, used elsewhere, is untouched
    assert module.torch_chunk_gated_delta_rule is original
