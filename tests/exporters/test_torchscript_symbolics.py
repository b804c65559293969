"""The TorchScript exporter's missing translations (aten::diff, aten::histc, boolean aten::cumsum) match PyTorch
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
