"""summarize(): the short validation summary kept in a manifest stays strict JSON."""

from __future__ import annotations

import json

import numpy as np

from tracefuse.validation.metrics import compare
from tracefuse.validation.report import failures, summarize


def _report(cases):
    return {"passed": all(o["passed"] for _, outs in cases for o in outs), "runtime": "ort-cpu",
            "reference": "torch", "tolerance": {"atol": 1e-4, "rtol": 1e-3},
            "cases": [{"name": n, "outputs": outs} for n, outs in cases]}


def test_worst_error_per_output_over_cases():
    e = np.zeros(3)
    report = _report([
        ("a", [compare("x", np.array([0.0, 0.5, 0.0]), e, 1.0, 0.0), compare("y", e, e, 1.0, 0.0)]),
        ("b", [compare("x", np.array([0.25, 0.0, 0.0]), e, 1.0, 0.0), compare("y", e + 0.125, e, 1.0, 0.0)]),
    ])
    summary = summarize(report)
    assert summary["max_abs"] == {"x": 0.5, "y": 0.125}
    assert summary["cases"] == ["a", "b"] and summary["passed"] is True


def test_unmeasurable_output_is_null_not_infinity():
    e = np.zeros((2, 3))
    report = _report([
        ("a", [compare("x", np.zeros((3, 2)), e, 1e-4, 0.0), compare("y", e, e, 1e-4, 0.0)]),
        ("b", [compare("x", e, e, 1e-4, 0.0), compare("y", np.full((2, 3), np.nan), e, 1e-4, 0.0)]),
    ])
    summary = summarize(report)
    assert summary["passed"] is False
    assert summary["max_abs"] == {"x": None, "y": None}  # x: shape mismatch in case a; y: NaN in case b
    json.dumps(summary, allow_nan=False)  # strict JSON: raises on Infinity / NaN
    assert failures(report) == [
        "a / x: shape [3, 2] != reference [2, 3]",
        "b / y: non-finite values differ from the reference",
    ]


def test_judge_by_cosine_rejudges_every_output_in_place():
    from tracefuse.validation.report import judge_by_cosine

    report = {"cases": [
        {"name": "a", "outputs": [{"name": "x", "cosine": 0.995, "passed": False, "reason": "atol"},
                                  {"name": "y", "cosine": 0.98, "passed": True}]},
        {"name": "b", "outputs": [{"name": "x", "passed": False}]},
    ]}
    judge_by_cosine(report, 0.99)
    first, second = report["cases"]
    assert first["outputs"][0]["passed"] and "reason" not in first["outputs"][0]
    assert not first["outputs"][1]["passed"] and first["outputs"][1]["reason"] == "cosine 0.98 < 0.99"
    assert second["outputs"][0]["reason"] == "no cosine was measured"
    assert not first["passed"] and not second["passed"] and not report["passed"]
    assert report["criterion"] == "cosine >= 0.99"
