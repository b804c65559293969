"""compare(): metrics and verdicts checked against values worked out by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracefuse.validation.metrics import compare

INF, NAN = float("inf"), float("nan")


def arr(*values, dtype=np.float32) -> np.ndarray:
    return np.array(values, dtype=dtype)


def test_pass_with_hand_computed_metrics():
    e = np.array([1.0, 2.0, -3.0, 0.0])
    a = np.array([1.0, 2.00005, -3.0, 0.0])
    r = compare("last_hidden_state", a, e, atol=1e-4, rtol=0.0)
    assert r["passed"] is True and "reason" not in r
    assert r["shape"] == [4] and r["dtype"] == "float64"
    assert r["max_abs"] == pytest.approx(5e-5, rel=1e-6)
    assert r["mean_abs"] == pytest.approx(5e-5 / 4, rel=1e-6)
    assert r["max_rel"] == pytest.approx(5e-5 / 2.0, rel=1e-6)  # |diff| / max(|ref|, atol)
    dot = 1.0 + 2.0 * 2.00005 + 9.0
    cosine = dot / (math.sqrt(1 + 2.00005**2 + 9) * math.sqrt(14.0))
    assert r["cosine"] == pytest.approx(cosine, abs=1e-12)
    assert "top1" not in r  # not a logits output


def test_max_rel_denominator_is_floored_at_atol():
    # |0 - 1e-5| / max(0, 1e-4) = 0.1 ; |10.001 - 10| / 10 = 1e-4 -> max 0.1
    r = compare("x", np.array([1e-5, 10.001]), np.array([0.0, 10.0]), atol=1e-4, rtol=1e-3)
    assert r["max_rel"] == pytest.approx(0.1, rel=1e-6)


def test_fail_names_count_and_error():
    e = arr(1.0, 2.0, 3.0, 4.0)
    a = arr(1.0, 2.5, 3.0, 5.0)
    r = compare("logits", a, e, atol=0.1, rtol=0.0)
    assert r["passed"] is False
    assert r["max_abs"] == pytest.approx(1.0) and r["mean_abs"] == pytest.approx(1.5 / 4)
    assert r["reason"].startswith("2 of 4 values exceed atol 0.1")
    assert "max abs error 1" in r["reason"]


@pytest.mark.parametrize(
    ("expected", "actual", "passed"),
    [
        # bound = atol + rtol*|e| = 0.25 + 0.125*2 = 0.5 (all exact in binary floating point)
        (2.0, 2.5, True),
        (2.0, 1.5, True),
        (2.0, 2.5 + 2**-20, False),
        # rtol uses |e|: bound = 0.25 + 0.125*4 = 0.75
        (-4.0, -3.25, True),
        (-4.0, -4.75, True),
        (-4.0, -3.25 + 2**-20, False),
        (0.0, 0.25, True),
        (0.0, -0.25 - 2**-20, False),
    ],
)
def test_tolerance_edge_is_inclusive(expected, actual, passed):
    r = compare("x", np.array([actual]), np.array([expected]), atol=0.25, rtol=0.125)
    assert r["passed"] is passed


def test_shape_mismatch():
    r = compare("logits", np.zeros((2, 3)), np.zeros((3, 2)), atol=1e-4, rtol=1e-3)
    assert r["passed"] is False
    assert r["reason"] == "shape [2, 3] != reference [3, 2]"
    assert r["actual_shape"] == [2, 3] and r["shape"] == [3, 2]
    assert "max_abs" not in r


def test_shape_mismatch_with_broadcastable_shapes_is_still_a_mismatch():
    r = compare("x", np.zeros((1, 4)), np.zeros((4,)), atol=1e-4, rtol=1e-3)
    assert r["passed"] is False and "shape" in r["reason"]


def test_same_nan_and_inf_positions_pass_and_are_left_out_of_metrics():
    e = np.array([NAN, 1.0, INF, -INF, 2.0])
    a = np.array([NAN, 1.5, INF, -INF, 2.0])
    r = compare("x", a, e, atol=1.0, rtol=0.0)
    assert r["passed"] is True
    assert r["max_abs"] == 0.5 and r["mean_abs"] == pytest.approx(0.5 / 2)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ([NAN, 1.0], [0.0, 1.0]),  # NaN where the reference is finite
        ([0.0, 1.0], [NAN, 1.0]),  # finite where the reference is NaN
        ([INF, 1.0], [1e30, 1.0]),  # overflow
        ([INF, 1.0], [-INF, 1.0]),  # infinities of opposite sign
        ([NAN, 1.0], [INF, 1.0]),  # NaN where the reference is inf
    ],
)
def test_non_finite_mismatch_fails(actual, expected):
    r = compare("x", np.array(actual), np.array(expected), atol=1e-4, rtol=1e-3)
    assert r["passed"] is False
    assert "non-finite" in r["reason"]


def test_top1_for_logits():
    e = np.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [0.0, 0.0, 9.0], [1.0, 2.0, 3.0]])
    a = np.array([[1.0, 2.0, 3.0], [5.0, 0.0, 1.0], [0.0, 0.0, 9.0], [1.0, 2.0, 3.0]])
    # argmax rows: expected [1, 0, 2, 2], actual [2, 0, 2, 2] -> 3 of 4 agree
    for name in ("logits", "start_logits", "end_logits"):
        assert compare(name, a, e, atol=10.0, rtol=0.0)["top1"] == 0.75
    assert "top1" not in compare("hidden", a, e, atol=10.0, rtol=0.0)
    assert "top1" not in compare("logits", e[:, :1], e[:, :1], atol=1.0, rtol=0.0)  # one class: no argmax


def test_top1_over_last_axis_of_token_logits():
    e = np.zeros((2, 3, 4))
    e[..., 1] = 1.0  # every position predicts class 1
    a = e.copy()
    a[0, 0, 3] = 2.0  # one of six positions now predicts class 3
    assert compare("logits", a, e, atol=10.0, rtol=0.0)["top1"] == pytest.approx(5 / 6)


def test_cosine_edge_cases():
    e = np.array([1.0, -2.0, 3.0])
    assert compare("x", -e, e, atol=100.0, rtol=0.0)["cosine"] == pytest.approx(-1.0)
    assert compare("x", 2 * e, e, atol=100.0, rtol=0.0)["cosine"] == pytest.approx(1.0)
    assert compare("x", np.zeros(3), np.zeros(3), atol=1e-4, rtol=0.0)["cosine"] == 1.0
    assert compare("x", np.zeros(3), e, atol=100.0, rtol=0.0)["cosine"] == 0.0


def test_mixed_dtypes_and_empty_outputs_never_raise():
    r = compare("ids", np.array([1, 2, 3], dtype=np.int64), np.array([1.0, 2.0, 3.0], dtype=np.float32), 1e-4, 0.0)
    assert r["passed"] is True and r["actual_dtype"] == "int64" and r["dtype"] == "float32"
    empty = compare("x", np.zeros((0, 4)), np.zeros((0, 4)), atol=1e-4, rtol=0.0)
    assert empty["passed"] is True and empty["max_abs"] == 0.0


def test_fp16_output_against_fp32_reference():
    e = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    a = e.astype(np.float16)  # fp16 rounding: ~1e-4 relative
    assert compare("x", a, e, atol=1e-6, rtol=0.0)["passed"] is False
    assert compare("x", a, e, atol=1e-3, rtol=0.0)["passed"] is True


def test_sqnr_in_decibels():
    e = np.ones(100)
    assert compare("x", e + 0.1, e, atol=1.0, rtol=0.0)["sqnr_db"] == pytest.approx(20.0)  # 100 / 1 -> 20 dB
    assert compare("x", e + 0.01, e, atol=1.0, rtol=0.0)["sqnr_db"] == pytest.approx(40.0)
    assert compare("x", e, e, atol=1.0, rtol=0.0)["sqnr_db"] is None  # identical: no noise to measure


def test_error_histogram_counts_hand_placed_errors_per_decade():
    expected = np.zeros(6, dtype=np.float32)
    # errors 0, 5e-10 (bin [0,1e-9)), 2e-7 ([1e-7,1e-6)), 1e-3 (edge: [1e-3,1e-2)), 0.5 ([0.1,1)), 7 ([1,inf))
    actual = np.array([0.0, 5e-10, 2e-7, 1e-3, 0.5, 7.0], dtype=np.float64)
    result = compare("y", actual, expected.astype(np.float64), atol=1e-4, rtol=0)
    hist = result["error_hist"]
    assert hist["edges"][:2] == [0.0, 1e-9] and hist["edges"][-1] == 1.0 and len(hist["edges"]) == 11
    want = {0: 2, 3: 1, 7: 1, 9: 1, 10: 1}  # bin index -> count, worked out by hand from the edges above
    assert hist["counts"] == [want.get(i, 0) for i in range(11)]
    assert sum(hist["counts"]) == actual.size
