"""check_feeds: every mismatch between feeds and the artifact's inputs is a FeedError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from tracefuse.artifact import TensorSpec
from tracefuse.errors import FeedError, TracefuseError
from tracefuse.runtimes.base import Runner, check_feeds

SPECS = (
    TensorSpec("input_ids", "int64", ("batch", "sequence")),
    TensorSpec("attention_mask", "int64", ("batch", "sequence")),
    TensorSpec("pixel_values", "float32", ("batch", 3, 8, 8)),
)


def good(batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.arange(batch * seq, dtype=np.int64).reshape(batch, seq),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "pixel_values": np.zeros((batch, 3, 8, 8), dtype=np.float32),
    }


def test_matching_feeds_pass_through():
    feeds = good()
    checked = check_feeds(SPECS, feeds)
    assert list(checked) == ["input_ids", "attention_mask", "pixel_values"]
    assert all(checked[k] is feeds[k] for k in feeds)  # no copies
    assert check_feeds(SPECS, good(batch=7, seq=1))["input_ids"].shape == (7, 1)


def test_nested_lists_are_accepted_as_arrays():
    specs = (TensorSpec("x", "float64", ("batch", 2)),)
    assert check_feeds(specs, {"x": [[1.0, 2.0], [3.0, 4.0]]})["x"].shape == (2, 2)


def test_unknown_and_missing_names():
    feeds = good()
    feeds["input_idz"] = feeds.pop("input_ids")
    with pytest.raises(FeedError) as info:
        check_feeds(SPECS, feeds)
    message = str(info.value)
    assert "do not match" in message
    assert "unexpected: input_idz" in message and "missing: input_ids" in message
    assert "input_ids int64['batch', 'sequence']" in message  # what to give
    assert isinstance(info.value, TracefuseError) and info.value.exit_code == 2


def test_only_missing():
    feeds = good()
    del feeds["pixel_values"]
    with pytest.raises(FeedError, match="missing: pixel_values") as info:
        check_feeds(SPECS, feeds)
    assert "unexpected" not in str(info.value)


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.uint8, np.bool_])
def test_wrong_dtype(dtype):
    feeds = good()
    feeds["input_ids"] = feeds["input_ids"].astype(dtype)
    with pytest.raises(FeedError, match="input 'input_ids' has the wrong dtype") as info:
        check_feeds(SPECS, feeds)
    assert info.value.found == np.dtype(dtype).name
    assert "int64" in info.value.fix


def test_float64_pixels_refused():
    feeds = good()
    feeds["pixel_values"] = feeds["pixel_values"].astype(np.float64)
    with pytest.raises(FeedError, match="'pixel_values' has the wrong dtype"):
        check_feeds(SPECS, feeds)


@pytest.mark.parametrize("shape", [(5,), (2, 5, 1), ()])
def test_wrong_rank(shape):
    feeds = good()
    feeds["attention_mask"] = np.ones(shape, dtype=np.int64)
    with pytest.raises(FeedError, match="input 'attention_mask' has the wrong rank") as info:
        check_feeds(SPECS, feeds)
    assert info.value.found.startswith(f"{len(shape)} dims")


def test_wrong_fixed_dim():
    feeds = good()
    feeds["pixel_values"] = np.zeros((2, 1, 8, 8), dtype=np.float32)
    with pytest.raises(FeedError, match="input 'pixel_values' axis 1 must be 3"):
        check_feeds(SPECS, feeds)


def test_named_axis_with_different_sizes():
    feeds = good()
    feeds["attention_mask"] = np.ones((2, 4), dtype=np.int64)
    with pytest.raises(FeedError, match="axis 'sequence' has different sizes") as info:
        check_feeds(SPECS, feeds)
    assert info.value.found == "5 in 'input_ids', 4 in 'attention_mask'"


def test_batch_shared_across_text_and_image_inputs():
    feeds = good()
    feeds["pixel_values"] = np.zeros((3, 3, 8, 8), dtype=np.float32)
    with pytest.raises(FeedError, match="axis 'batch' has different sizes"):
        check_feeds(SPECS, feeds)


class _Recording(Runner):
    name = "recording"

    def __init__(self) -> None:
        super().__init__(SPECS, (TensorSpec("y", "float32", ("batch",)),))
        self.calls = 0

    def _open(self) -> None:
        pass

    def _infer(self, feeds):
        self.calls += 1
        return {"y": np.zeros(feeds["input_ids"].shape[0], dtype=np.float32)}


def test_runner_checks_feeds_before_running():
    runner = _Recording()
    with runner:
        assert runner.infer(good())["y"].shape == (2,)
        assert runner.calls == 1 and runner.last_latency_ms is not None
        bad = good()
        bad["input_ids"] = bad["input_ids"].astype(np.int32)
        with pytest.raises(FeedError):
            runner.infer(bad)
        assert runner.calls == 1  # the runtime never saw the bad feeds
