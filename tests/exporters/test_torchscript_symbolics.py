"""The TorchScript exporter's missing translations (aten::diff, aten::histc, boolean aten::cumsum,
aten::unfold over a dynamic axis, aten::movedim and aten::permute with negative dims) match PyTorch
on ONNX Runtime."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import torch

from tracefuse.exporters.torchscript_symbolics import register_symbolics
from tracefuse.jobs.coverage_probe import probe


class _Ops(torch.nn.Module):
    def forward(self, x, ids):
        return (torch.diff(x, prepend=x[:, :1] - 1, dim=-1),  # Transformers' packed-sequence check
                torch.diff(x, n=2, dim=0),
                torch.diff(x > 0, dim=1),  # booleans: exclusive or
                torch.histc(ids.float(), bins=6, min=0, max=5),  # expert counts; 5 lands in the last bin
                torch.histc(x, bins=4, min=-1, max=1),  # values outside the range are left out
                (x > 0).cumsum(-1),  # booleans are summed as int64
                x.cumsum(0))


def _run(module, *args):
    register_symbolics(18)
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, dynamo=False, opset_version=18, input_names=["x", "ids"])
    session = ort.InferenceSession(buffer.getvalue())
    return session.run(None, {"x": args[0].numpy(), "ids": args[1].numpy()})


def test_translations_match_pytorch():
    generator = torch.Generator().manual_seed(0)
    x, ids = torch.randn(3, 7, generator=generator), torch.randint(0, 6, (20,), generator=generator)
    expected = _Ops()(x, ids)
    for want, got in zip(expected, _run(_Ops(), x, ids), strict=True):
        assert got.dtype == want.numpy().dtype
        np.testing.assert_allclose(got.astype(np.float64), want.numpy().astype(np.float64), atol=1e-6)


def test_a_codec_whose_masks_use_them_validates_with_torchscript(tmp_path):
    row = probe("mimi_encoder", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row


def test_mixture_of_experts_traces_with_batched_experts_and_keeps_its_setting(tmp_path):
    row = probe("qwen2_moe", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row  # grouped_mm has no TorchScript translation; batched_mm is traced
    from tracefuse.exporters.onnx_exporter import _batched_experts
    from tracefuse.exporters.sources import load_source

    model = load_source("tiny:qwen2_moe").module
    with _batched_experts(model):
        assert model.config._experts_implementation == "batched_mm"
    assert model.config._experts_implementation == "grouped_mm"


class _Windows(torch.nn.Module):
    def forward(self, x):
        blocks = x.unfold(1, 4, 2)  # over the dynamic length: gathered windows
        return (blocks, torch.movedim(blocks, source=-1, destination=2).contiguous(),  # a negative source
                x.unfold(-1, 3, 3),  # over a static axis: torch's own translation
                torch.movedim(x, 0, -1),
                x.permute(0, -2, -1, 1))  # a mamba2-style scan's permute with negative dims


def test_unfold_over_a_dynamic_length_and_negative_dims_of_movedim_and_permute_match_pytorch_at_two_shapes():
    register_symbolics(18)
    buffer = io.BytesIO()
    torch.onnx.export(_Windows(), (torch.randn(2, 11, 3, 6),), buffer, dynamo=False, opset_version=18,
                      input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "length"}})
    session = ort.InferenceSession(buffer.getvalue())
    for shape in ((2, 11, 3, 6), (3, 16, 3, 6)):  # the second: more windows than the traced input had
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        for want, got in zip(_Windows()(x), session.run(None, {"x": x.numpy()}), strict=True):
            assert got.shape == tuple(want.shape)
            np.testing.assert_array_equal(got, want.numpy())


def test_an_audio_conformer_with_windowed_attention_validates_with_torchscript(tmp_path):
    row = probe("gemma3n_audio", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row  # unfold over the frames, movedim(-1, 2), a padding mask


def test_a_state_space_hybrid_validates_with_torchscript(tmp_path):
    row = probe("nemotron_h", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated", row  # its scan permutes with (0, -2, -1, 1)


class _Resizes(torch.nn.Module):
    def forward(self, x):
        interpolate = torch.nn.functional.interpolate
        return (interpolate(x, size=(7, 5), mode="bilinear", antialias=True),  # downscaled: the filter widens
                interpolate(x, size=(20, 33), mode="bilinear", antialias=True),  # upscaled: plain bilinear
                interpolate(x, size=(7, 5), mode="bicubic", antialias=True),
                interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True))


def test_antialiased_resizes_match_pytorch():
    register_symbolics(18)
    buffer = io.BytesIO()
    torch.onnx.export(_Resizes(), (torch.randn(2, 3, 16, 12),), buffer, dynamo=False, opset_version=18,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue())
    x = torch.randn(3, 3, 16, 12, generator=torch.Generator().manual_seed(2))
    for want, got in zip(_Resizes()(x), session.run(None, {"x": x.numpy()}), strict=True):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


class _AlignedCorners(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=(7, 5), mode="bilinear", antialias=True, align_corners=True)


def test_an_antialiased_resize_with_aligned_corners_is_refused_not_mistranslated():
    import pytest

    register_symbolics(18)
    with pytest.raises(Exception, match="align_corners"):
        torch.onnx.export(_AlignedCorners(), (torch.randn(1, 3, 16, 12),), io.BytesIO(), dynamo=False,
                          opset_version=18)


class _GroupedAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True)


def test_attention_with_grouped_key_value_heads_matches_pytorch_at_two_shapes():
    register_symbolics(18)
    generator = torch.Generator().manual_seed(3)
    args = (torch.randn(2, 4, 5, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator),
            torch.randn(2, 2, 5, 8, generator=generator))
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "length"}
    torch.onnx.export(_GroupedAttention(), args, buffer, dynamo=False, opset_version=18, input_names=["q", "k", "v"],
                      dynamic_axes={"q": axes, "k": axes, "v": axes})
    session = ort.InferenceSession(buffer.getvalue())
    for batch, length in ((2, 5), (3, 9)):
        q = torch.randn(batch, 4, length, 8, generator=generator)
        k = torch.randn(batch, 2, length, 8, generator=generator)
        v = torch.randn(batch, 2, length, 8, generator=generator)
        want = _GroupedAttention()(q, k, v).numpy()
        got = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)


class _UnitSolve(torch.nn.Module):
    def forward(self, a, b):
        return torch.linalg.solve_triangular(a, b, upper=False, unitriangular=True)


def test_a_unit_triangular_solve_matches_pytorch():
    register_symbolics(18)
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(2, 3, 8, 8, generator=generator) * 0.3
    b = torch.randn(2, 3, 8, 5, generator=generator)
    buffer = io.BytesIO()
    torch.onnx.export(_UnitSolve(), (a, b), buffer, dynamo=False, opset_version=18, input_names=["a", "b"],
                      dynamic_axes={"a": {0: "batch"}, "b": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue())
    a, b = torch.randn(4, 3, 8, 8, generator=generator) * 0.3, torch.randn(4, 3, 8, 5, generator=generator)
    got = session.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
    np.testing.assert_allclose(got, _UnitSolve()(a, b).numpy(), atol=1e-4)  # the upper triangle of a is ignored


def test_a_unit_triangular_solve_of_a_size_the_trace_does_not_fix_matches_pytorch():
    register_symbolics(18)
    generator = torch.Generator().manual_seed(5)
    buffer = io.BytesIO()
    torch.onnx.export(_UnitSolve(), (torch.randn(1, 8, 8) * 0.3, torch.randn(1, 8, 2)), buffer, dynamo=False,
                      opset_version=18, input_names=["a", "b"], dynamic_axes={"a": {1: "n", 2: "n"}, "b": {1: "n"}})
    session = ort.InferenceSession(buffer.getvalue())
    for rows in (8, 70):  # 70 rows: more than the traced 8, so the steps cannot have been counted from it
        a, b = torch.randn(1, rows, rows, generator=generator) * 0.1, torch.randn(1, rows, 2, generator=generator)
        got = session.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
        np.testing.assert_allclose(got, _UnitSolve()(a, b).numpy(), atol=1e-4)


class _SmallOps(torch.nn.Module):
    def forward(self, x, ids):
        flags = ids.clone()
        flags |= 4  # in place, with a Python int
        return (torch.expm1(x), torch.nn.functional.rms_norm(x, (x.shape[-1],), torch.ones(x.shape[-1]) * 2),
                torch.nn.functional.rms_norm(x, (x.shape[-1],), eps=1e-3), ids | (ids >> 1), flags,
                (x > 0) | (x < -1), torch.full(ids.shape, fill_value=3))


def test_integer_or_expm1_rms_norm_and_full_match_pytorch():
    register_symbolics(18)
    generator = torch.Generator().manual_seed(6)
    x, ids = torch.randn(2, 5, 6, generator=generator), torch.randint(0, 64, (2, 5), generator=generator)
    buffer = io.BytesIO()
    torch.onnx.export(_SmallOps(), (x, ids), buffer, dynamo=False, opset_version=18, input_names=["x", "ids"],
                      dynamic_axes={"x": {0: "batch", 1: "length"}, "ids": {0: "batch", 1: "length"}})
    session = ort.InferenceSession(buffer.getvalue())
    x, ids = torch.randn(3, 7, 6, generator=generator), torch.randint(0, 64, (3, 7), generator=generator)
    for want, got in zip(_SmallOps()(x, ids), session.run(None, {"x": x.numpy(), "ids": ids.numpy()}), strict=True):
        assert got.dtype == want.numpy().dtype
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
