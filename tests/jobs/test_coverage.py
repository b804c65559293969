"""`tracefuse coverage` end to end on a few model types: one that validates, one that fails for a known
reason (layoutlmv2 needs detectron2, which is not installed), the JSON and Markdown built from the rows,
resuming from the JSONL, and a worker killed at its time limit and replaced."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tracefuse.jobs.coverage import Worker, read_rows, select_types
from tracefuse.jobs.coverage_probe import (
    FIXED,
    NO_CACHE,
    TS_NO_CACHE,
    _cache_retry,
    _next_attempts,
    _row_outcome,
    probe,
    reason_of,
)
from tracefuse.jobs.coverage_report import build_report, reason_class, to_markdown

pytestmark = pytest.mark.skipif(importlib.util.find_spec("detectron2") is not None,
                                reason="layoutlmv2 is the known failure only where detectron2 is missing")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [sys.executable, "-c", "from tracefuse.cli import entrypoint; entrypoint()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def _layoutlmv2_error() -> str:
    """What building LayoutLMv2 raises here, straight from transformers (not through tracefuse)."""
    from transformers import LayoutLMv2Config, LayoutLMv2Model

    with pytest.raises(ImportError) as info:
        LayoutLMv2Model(LayoutLMv2Config())
    return str(info.value).strip().splitlines()[0]


def test_coverage_cli_rows_counts_and_reasons(tmp_path):
    jsonl, json_path, md = tmp_path / "rows.jsonl", tmp_path / "cov.json", tmp_path / "cov.md"
    args = ["coverage", "--types", "bert,layoutlmv2", "--jobs", "2", "--results", str(jsonl), "--json",
            str(json_path), "--markdown", str(md), "--work-dir", str(tmp_path / "work")]
    done = _cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[2/2]" in done.stderr  # progress: n/total

    report = json.loads(json_path.read_text())
    rows = {r["model_type"]: r for r in report["rows"]}
    assert set(rows) == {"bert", "layoutlmv2"}
    bert, layout = rows["bert"], rows["layoutlmv2"]
    # the default order tries the fast TorchScript exporter first; it validates bert, so dynamo is not tried
    assert bert["status"] == "validated" and bert["exported"] and bert["exporter"] == "torchscript"
    assert "tried" not in bert and report["exporters"] == ["torchscript", "dynamo", "transformers"]
    assert len(bert["cases"]) == 2 and bert["cases"][0] != bert["cases"][1]  # two different shapes
    assert bert["max_abs"] < 1e-3
    assert layout["status"] == "failed" and not layout["exported"] and layout["stage"] == "build"
    assert layout["reason"] == f"ImportError: {_layoutlmv2_error()}"[:240]
    assert layout["reason_class"] == "optional package missing"
    # the counts are the rows' counts
    summary = report["summary"]
    assert summary["model_types"] == 2 and summary["validated"] == 1 and summary["exported"] == 1
    assert summary["failed"] == 1
    assert report["failure_classes"] == [{"class": "optional package missing", "count": 1,
                                          "model_types": ["layoutlmv2"]}]

    text = md.read_text()
    assert "**1 of 2 model types export to ONNX and validate at fp32 at two shapes**" in text
    assert "| optional package missing | 1 | layoutlmv2 |" in text
    assert "detectron2" in [line for line in text.splitlines() if line.startswith("| layoutlmv2 |")][0]

    # a second run resumes: nothing is probed again and the rows stay as they were
    lines = jsonl.read_text().splitlines()
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert jsonl.read_text().splitlines() == lines
    assert "[1/2]" not in again.stderr


def test_worker_killed_at_time_limit_is_replaced(tmp_path):
    (pair,) = select_types(["layoutlmv2"], None)
    (slow_pair,) = select_types(["llama"], None)
    worker = Worker(0, tmp_path, threads=1)
    try:
        # The limit is checked once per POLL_S (1 s), so the probe must outlast that too: the TorchScript
        # exporter takes tiny llama through in under a second, the dynamo one needs about 12 s of CPU here.
        slow = worker.probe(*slow_pair, timeout_s=0.5, exporters=("dynamo",))
        assert slow["status"] == "timeout" and "0.5 s limit" in slow["reason"]
        assert worker.proc is None  # killed
        row = worker.probe(*pair, timeout_s=300)  # a fresh worker answers
        assert row["status"] == "failed" and "detectron2" in row["reason"]
    finally:
        worker.stop()


def test_reason_is_innermost_message_and_rows_resume(tmp_path):
    try:
        try:
            raise ValueError("mrope_section must sum to head_dim // 2\nsecond line")
        except ValueError as inner:
            raise RuntimeError("Failed to export the model with torch.export. This is step 1/3") from inner
    except RuntimeError as exc:
        assert reason_of(exc) == "ValueError: mrope_section must sum to head_dim // 2"
    path = tmp_path / "rows.jsonl"
    path.write_text('{"model_type": "a", "status": "failed"}\n{"model_type": "a", "status": "validated"}\n{"mod')
    assert read_rows(path) == {"a": {"model_type": "a", "status": "validated"}}  # last wins, torn line skipped
    rows = [{"model_type": "x", "task": "feature-extraction", "status": "failed", "stage": "export",
             "reason": "RuntimeError: No ONNX function found for <OpOverload(op='aten._grouped_mm')>"},
            {"model_type": "y", "task": "feature-extraction", "status": "validated", "exported": True,
             "exporter": "torchscript", "stage": "validate", "reason": None}]
    assert reason_class(rows[0]) == "mixture of experts: grouped_mm"
    report = build_report(rows)
    assert report["summary"]["validated"] == 1 and report["summary"]["by_exporter"] == {"torchscript": 1}
    assert "| x | feature-extraction | failed | - | export | RuntimeError: No ONNX function" in to_markdown(report)


def _outcome(exporter, status, stage="export", reason="", specialized=False):
    return {"exporter": exporter, "status": status, "stage": stage, "reason": reason, "exported": status != "failed",
            "specialized": specialized}


def test_exporter_order_moves_on_only_when_another_exporter_could_help():
    rest = ["dynamo", "transformers"]
    assert _next_attempts(_outcome("torchscript", "validated", "validate"), rest) is None
    assert _next_attempts(_outcome("torchscript", "failed", "forward"), rest) is None  # the model itself fails
    assert _next_attempts(_outcome("torchscript", "failed"), rest) == rest  # an export error: the next exporter
    assert _next_attempts(_outcome("torchscript", "mismatch", "validate"), rest) == rest  # a trace holding a shape
    ran = "Fail: [ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Add node"
    assert _next_attempts(_outcome("torchscript", "failed", "validate", ran), rest) == rest
    # a graph that fails to load or run at all: the next exporter may write a better one
    assert _next_attempts(_outcome("torchscript", "failed", "validate", "INVALID_GRAPH"), rest) == rest
    # dynamo's graph ran, and something else failed at a validation shape (the reference): stop there
    assert _next_attempts(_outcome("dynamo", "failed", "validate", "shape of the reference"), rest[1:]) is None
    # dynamo: fixed axes first when torch.export specializes an axis, instead of the rest when the graph holds it
    conflict = "ValueError: Found the following conflicts between user-specified ranges and inferred ranges"
    assert _next_attempts(_outcome("dynamo", "failed", "export", conflict), ["transformers"]) == [FIXED, "transformers"]
    assert _next_attempts(_outcome("dynamo", "failed", "validate", ran), ["transformers"]) == [FIXED]
    assert _next_attempts(_outcome("dynamo", "mismatch", "validate", specialized=True), ["transformers"]) == [FIXED]
    assert _next_attempts(_outcome(FIXED, "mismatch", "validate"), ["transformers"]) is None


def test_row_reports_the_validated_exporter_else_dynamo_s_reason():
    ts_fail, dyn_fail = _outcome("torchscript", "failed", reason="ts"), _outcome("dynamo", "failed", reason="dyn")
    dyn_ok = _outcome("dynamo", "validated", "validate")
    assert _row_outcome([ts_fail, dyn_ok]) is dyn_ok
    assert _row_outcome([ts_fail, dyn_fail, _outcome("transformers", "failed")]) is dyn_fail  # the default's reason
    assert _row_outcome([ts_fail]) is ts_fail
    ts_mismatch = _outcome("torchscript", "mismatch", "validate")
    assert _row_outcome([ts_mismatch, dyn_fail]) is ts_mismatch  # exported beats failed


def test_coverage_cli_rejects_an_unknown_exporter(tmp_path):
    done = _cli("coverage", "--types", "bert", "--exporters", "dynamo,onnxmagic", "--results", str(tmp_path / "r"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "onnxmagic" in done.stderr and "torchscript" in done.stderr  # what was wrong, and what to use
    assert not (tmp_path / "r").exists()


def test_a_decoder_that_fails_with_its_cache_is_tried_without_it():
    failed = [_outcome("torchscript", "failed"), _outcome("dynamo", "failed")]
    assert _cache_retry("llama", "feature-extraction", failed)
    assert not _cache_retry("llama", "text-generation", failed)  # there the cache is what is exported
    assert not _cache_retry("bert", "feature-extraction", failed)  # no cache to drop
    assert not _cache_retry("llama", "feature-extraction", [_outcome("dynamo", "failed", stage="forward")])
    assert not _cache_retry("llama", "feature-extraction", [*failed, _outcome("dynamo", "validated", "validate")])


def test_sparse_attention_decoder_validates_without_its_cache(tmp_path):
    # deepseek_v32's indexer cannot run a multi-token step after a cached one (the trace shape of a cache graph)
    row = probe("deepseek_v32", "feature-extraction", tmp_path, exporters=("dynamo",))
    assert row["status"] == "validated" and row["exporter"] == NO_CACHE, row
    assert row["cases"] == ["batch=1,sequence=16", "batch=3,sequence=37"]  # no past_sequence: the plain graph
    assert "dynamo" in row["tried"]


def test_the_plain_graph_is_tried_with_torchscript_first(tmp_path):
    # zaya's cache graph from torchscript mismatches after a cached step; its plain graph validates, in seconds
    row = probe("zaya", "feature-extraction", tmp_path, exporters=("torchscript",))
    assert row["status"] == "validated" and row["exporter"] == TS_NO_CACHE, row
    assert row["cases"] == ["batch=1,sequence=16", "batch=3,sequence=37"]
    assert "torchscript" in row["tried"]
