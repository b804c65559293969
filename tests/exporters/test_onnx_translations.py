"""The dynamo exporter retries with transformers' ONNX translations only when an op has no ONNX function."""

from __future__ import annotations

import pytest
import torch

from tracefuse.artifact import TensorSpec
from tracefuse.exporters import onnx_exporter


class _Program:
    model = "graph"


def _fake_export(failures: list[Exception], calls: list):
    def export(*args, **kwargs):
        calls.append(kwargs.get("custom_translation_table"))
        if failures:
            raise failures.pop(0)
        return _Program()

    return export


SPECS = (TensorSpec("x", "float32", ("batch", 4)),)


def test_transformers_translations_cover_grouped_mm():
    table = onnx_exporter._transformers_translations()
    assert torch.ops.aten._grouped_mm.default in table


def test_missing_onnx_function_is_retried_with_the_translations(monkeypatch):
    calls: list = []
    failure = RuntimeError("Failed to convert")
    failure.__cause__ = RuntimeError("No ONNX function found for <OpOverload(op='aten._grouped_mm')>")
    monkeypatch.setattr(torch.onnx, "export", _fake_export([failure], calls))
    assert onnx_exporter._export_dynamo(None, (), SPECS, SPECS, 18) == "graph"
    assert calls[0] is None and torch.ops.aten._grouped_mm.default in calls[1]


def test_other_export_failures_are_not_retried(monkeypatch):
    calls: list = []
    monkeypatch.setattr(torch.onnx, "export", _fake_export([RuntimeError("data-dependent guard")], calls))
    with pytest.raises(RuntimeError, match="data-dependent"):
        onnx_exporter._export_dynamo(None, (), SPECS, SPECS, 18)
    assert calls == [None]
