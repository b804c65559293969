"""The CI report views: JUnit XML (parsed back) and the self-contained HTML page (rendered in headless Chromium)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tracefuse.validation.reports_html import to_html, write_html
from tracefuse.validation.reports_junit import write_junit


def _cell(model: str, fmt: str, status: str, **extra):
    base = {
        "id": f"{model}/{fmt}/none/ort-cpu", "model": model, "source": f"tiny:{model}", "format": "onnx",
        "format_name": fmt, "preset": "none", "runtime": "ort-cpu", "tolerance": {"atol": 1e-4, "rtol": 1e-3},
        "status": status, "wall_s": 1.5, "cache": "miss", "size_bytes": 2_500_000, "failures": [], "message": None,
        "metrics": {"last_hidden_state": {"max_abs": 2e-6, "mean_abs": 3e-7, "max_rel": 1e-5, "cosine": 0.9999999}},
        "latency_ms": {"ort-cpu": 0.8, "torch": 2.4}, "passes": [{"name": "fuse-attention", "stats": {"matched": 2}}],
    }
    return {**base, **extra}


FAILED = _cell(
    "gpt2", "onnx", "fail",
    metrics={"logits": {"max_abs": 0.31, "mean_abs": 0.02, "max_rel": 4.0, "cosine": 0.97, "top1": 0.5}},
    failures=[{"case": "batch1_seq8", "output": "logits", "metric": "max_abs", "value": 0.31, "atol": 1e-4,
               "rtol": 1e-3, "reason": "12 of 8000 values exceed atol 0.0001 + rtol 0.001·|ref| (max abs error 0.31)"}],
    message="logits (batch1_seq8): max_abs — 12 of 8000 values exceed",
)
REPORT = {
    "kind": "tracefuse-ci", "tracefuse_version": "0.1.0", "recipe": "tracefuse.toml", "duration_s": 12.0,
    "passed": False, "summary": {"cells": 3, "pass": 1, "fail": 1, "error": 1, "timeout": 0, "skipped": 1},
    "cache": {"dir": "/c", "exports": 2, "hits": 1},
    "cells": [
        _cell("bert", "onnx", "pass"), FAILED,
        _cell("gpt2", "onnx-ts", "error", metrics={}, latency_ms={}, message="ExportError: <boom> & more",
              traceback="Traceback ..."),
    ],
    "skipped": [{"id": "bert/onnx/none/litert", "reason": "runtime litert does not run onnx"}],
}


def test_junit_names_the_failing_metric(tmp_path):
    path = tmp_path / "ci.xml"
    write_junit(REPORT, path)
    root = ET.parse(path).getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"bert", "gpt2"}
    gpt2 = suites["gpt2"]
    assert (gpt2.get("tests"), gpt2.get("failures"), gpt2.get("errors")) == ("2", "1", "1")
    failure = root.find("./testsuite[@name='gpt2']/testcase[@name='onnx/none/ort-cpu']/failure")
    assert failure is not None
    message = failure.get("message")
    assert message.startswith("max_abs 0.31 exceeds atol 0.0001") and "'logits'" in message and "batch1_seq8" in message
    error = root.find("./testsuite[@name='gpt2']/testcase[@name='onnx-ts/none/ort-cpu']/error")
    assert error is not None and error.get("message") == "ExportError: <boom> & more"
    skipped = root.find("./testsuite[@name='bert']/testcase[@name='onnx/none/litert']/skipped")
    assert skipped is not None and "does not run onnx" in skipped.get("message")
    assert root.find("./testsuite[@name='bert']/testcase[@name='onnx/none/ort-cpu']/failure") is None


def test_html_is_self_contained_and_escaped():
    page = to_html(REPORT)
    assert page.count('<section class="model">') == 2 and page.count("<table>") == 2
    assert page.count("<svg") == 4
    assert "&lt;boom&gt; &amp; more" in page and "<boom>" not in page
    assert "fuse-attention ×2" in page and "0.31" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in page


def _colour_pixels(png, rgb, tol=6):
    pixels = np.asarray(png.convert("RGB"), dtype=np.int16)
    return int(np.all(np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tol, axis=-1).sum())


def test_html_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow is needed to read the screenshot")
    page, shot = tmp_path / "ci.html", tmp_path / "shot.png"
    write_html(REPORT, page)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    png = image_mod.open(shot)
    assert png.size == (1400, 1800)
    # The SVG bars (first series colour), the tolerance marker, and the pass / fail verdict colours all paint.
    assert _colour_pixels(png, (0x4E, 0x79, 0xA7)) > 200
    assert _colour_pixels(png, (0xF2, 0x8E, 0x2B)) > 100
    assert _colour_pixels(png, (0x1A, 0x7F, 0x37)) > 20
    assert _colour_pixels(png, (0xCF, 0x22, 0x2E)) > 20
    # Table header cells are shaded #f3f3f3.
    assert _colour_pixels(png, (0xF3, 0xF3, 0xF3), tol=1) > 2000
