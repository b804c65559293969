"""Shared fixtures: artifacts exported once per session and reused by tests that only read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """A session-wide directory for shared artifacts."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def bert_artifact(artifacts_dir) -> Path:
    """tiny:bert exported to ONNX (feature-extraction) and validated; treat it as read-only."""
    from tracefuse import api

    out = artifacts_dir / "bert"
    result = api.export("tiny:bert", out)
    assert result.report is not None and result.report["passed"]
    return out


@pytest.fixture(scope="session")
def decoder_artifact(artifacts_dir):
    """A function: (model_type, task="text-generation") -> (path, report) of tiny:<model_type> exported with
    its KV cache and validated (prefill + decode steps); exported once per session, treat it as read-only."""
    from tracefuse import api

    exported: dict[tuple[str, str], tuple[Path, dict]] = {}

    def get(model_type: str, task: str = "text-generation") -> tuple[Path, dict]:
        if (model_type, task) not in exported:
            out = artifacts_dir / f"decoder-{model_type}-{task}"
            result = api.export(f"tiny:{model_type}", out, task=task)
            exported[model_type, task] = (out, result.report)
        return exported[model_type, task]

    return get


@pytest.fixture
def wide_consoles():
    """Rich wraps at 80 columns when not on a terminal; CLI tests use this to keep messages with long tmp
    paths on one line (`pytestmark = pytest.mark.usefixtures("wide_consoles")`)."""
    from tracefuse import cli

    saved = cli.out._width, cli.err._width
    cli.out.width = cli.err.width = 1000
    yield
    cli.out._width, cli.err._width = saved
