"""Load: one runner shared by 4 threads gives identical outputs, opens one session, and does not leak memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tracefuse import api
from tracefuse.artifact import load_artifact
from tracefuse.runtimes import open_runner
from tracefuse.runtimes.base import Runner

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

THREADS = 4
PER_THREAD = 2500  # 10,000 inferences of tiny:bert: a few seconds on one core
TIME_LIMIT_S = 30


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _feeds(runner: Runner, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runner.inputs:
        if "mask" in spec.name:
            feeds[spec.name] = np.ones((1, seq), dtype=spec.dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2 if "type" in spec.name else 100, (1, seq)).astype(spec.dtype)
    return feeds


def test_soak_four_threads_identical_outputs_bounded_memory(bert_artifact):
    runner = api.load(bert_artifact, threads=1)
    cases = [_feeds(runner, seq, seed) for seed, seq in enumerate((3, 7, 11, 16))]
    expected = [runner.infer(c) for c in cases]  # single-threaded reference
    for _ in range(200):  # warm up allocator arenas before measuring
        runner.infer(cases[0])
    rss_before = _rss_bytes()
    errors: list[str] = []
    done = [0] * THREADS
    deadline = time.monotonic() + TIME_LIMIT_S

    def work(t: int) -> None:
        for i in range(PER_THREAD):
            if time.monotonic() > deadline:
                return
            k = (t + i) % len(cases)
            out = runner.infer(cases[k])
            for name, value in out.items():
                if not np.array_equal(value, expected[k][name]):
                    errors.append(f"thread {t} call {i}: output {name} differs")
                    return
            done[t] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    growth = _rss_bytes() - rss_before
    runner.close()
    assert errors == []
    assert sum(done) >= 2000, f"only {sum(done)} inferences in {TIME_LIMIT_S}s"
    print(f"soak: {sum(done)} inferences, RSS growth {growth / 2**20:.1f} MiB")
    assert growth < 64 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over {sum(done)} inferences"
    assert isinstance(runner.last_latency_ms, float) and runner.last_latency_ms > 0


def test_threads_racing_to_open_create_one_session(bert_artifact, monkeypatch):
    runner = open_runner(load_artifact(bert_artifact), threads=1)
    cls = type(runner)
    opened = []
    original = cls._open

    def slow_open(self):
        opened.append(threading.get_ident())
        time.sleep(0.2)  # widen the window in which an unlocked open would run twice
        original(self)

    monkeypatch.setattr(cls, "_open", slow_open)
    feeds = _feeds(runner, 5, 0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(runner.infer(feeds))) for _ in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    runner.close()
    assert len(opened) == 1
    assert len(results) == THREADS
    for out in results[1:]:
        for name, value in out.items():
            np.testing.assert_array_equal(value, results[0][name])


def test_runner_marked_not_thread_safe_is_serialized(bert_artifact):
    runner = open_runner(load_artifact(bert_artifact), threads=1)
    inside = []
    overlap = []
    original = runner._infer

    def watched(feeds):
        inside.append(1)
        if len(inside) > 1:
            overlap.append(True)
        time.sleep(0.01)
        inside.pop()
        return original(feeds)

    runner._infer = watched
    runner.thread_safe = False
    feeds = _feeds(runner, 5, 0)
    threads = [threading.Thread(target=lambda: [runner.infer(feeds) for _ in range(10)]) for _ in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    runner.close()
    assert overlap == []
