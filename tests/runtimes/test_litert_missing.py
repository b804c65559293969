"""A missing tflite extra gives MissingDependencyError naming the install command."""

from __future__ import annotations

import sys

import pytest

from tracefuse.errors import MissingDependencyError


def test_missing_converter_names_the_extra(monkeypatch):
    from tracefuse.exporters import tflite_exporter

    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'tracefuse\[tflite\]'"):
        tflite_exporter._litert_torch()


def test_missing_interpreters_name_the_extra(monkeypatch):
    from tracefuse.runtimes import litert

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'tracefuse\[tflite\]'"):
        litert.interpreter_class()


def test_tflite_runtime_is_the_fallback(monkeypatch):
    import types

    from tracefuse.runtimes import litert

    fake = types.ModuleType("tflite_runtime.interpreter")

    class Interpreter:  # stands in for tflite_runtime's class; only its identity is checked
        pass

    fake.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert litert.interpreter_class() is Interpreter
