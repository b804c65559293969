"""The Runner contract: open an artifact on one runtime, check feeds against the manifest, infer."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tracefuse.artifact import TensorSpec
from tracefuse.errors import FeedError

logger = logging.getLogger(__name__)


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check feed names, dtypes, ranks and fixed dims against the specs; raise FeedError naming the problem."""
    expected = {s.name: s for s in specs}
    unknown = sorted(set(feeds) - set(expected))
    missing = sorted(set(expected) - set(feeds))
    if unknown or missing:
        raise FeedError(
            "the inputs do not match the artifact's inputs",
            found="; ".join(p for p in (f"unexpected: {', '.join(unknown)}" if unknown else "",
                                        f"missing: {', '.join(missing)}" if missing else "") if p),
            fix=f"give exactly: {', '.join(f'{s.name} {s.dtype}{list(s.shape)}' for s in specs)}",
        )
    checked: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        arr = np.asarray(feeds[spec.name])
        if arr.dtype != np.dtype(spec.dtype):
            raise FeedError(
                f"input '{spec.name}' has the wrong dtype", found=str(arr.dtype),
                fix=f"give {spec.dtype} (e.g. array.astype(np.{spec.dtype}))",
            )
        if arr.ndim != len(spec.shape):
            raise FeedError(
                f"input '{spec.name}' has the wrong rank", found=f"{arr.ndim} dims {list(arr.shape)}",
                fix=f"give {len(spec.shape)} dims {list(spec.shape)}",
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, int) and want != got:
                raise FeedError(
                    f"input '{spec.name}' axis {axis} must be {want}", found=f"shape {list(arr.shape)}",
                    fix=f"give shape {list(spec.shape)}",
                )
            if isinstance(want, str):
                seen = sizes.setdefault(want, (got, spec.name))
                if seen[0] != got:
                    raise FeedError(
                        f"axis '{want}' has different sizes across inputs",
                        found=f"{seen[0]} in '{seen[1]}', {got} in '{spec.name}'",
                        fix="give all inputs the same size on a shared axis",
                    )
        checked[spec.name] = arr
    return checked


class Runner:
    """Base of every runtime adapter: a context manager with `open`, `infer(feeds)`, `close`.

    Subclasses implement `_open`, `_infer` and `_close`. `infer` checks the feeds first and records
    the latency of the last call in `last_latency_ms`.

    Threads: one opened runner may be shared by many threads. `open` is serialized (one session, however
    many threads race to open it); `infer` runs concurrently when the runtime allows it (`thread_safe`,
    true for ONNX Runtime, whose run() is documented thread-safe) and is serialized by a lock when a
    subclass sets `thread_safe = False` (e.g. a TFLite interpreter). `last_latency_ms` is the latency
    of whichever call finished last, in any thread; time calls yourself for per-call figures. Close a
    runner only after every thread has finished using it.
    """

    name = "base"
    thread_safe = True

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.last_latency_ms: float | None = None
        self._opened = False

    def _lock(self) -> threading.RLock:
        # dict.setdefault is atomic: subclasses that never call Runner.__init__ still get exactly one lock
        return self.__dict__.setdefault("_runner_lock", threading.RLock())

    def open(self) -> Runner:
        """Prepare the runtime session (idempotent, and safe when several threads open at once)."""
        if not self._opened:
            with self._lock():
                if not self._opened:
                    self._open()
                    self._opened = True
        return self

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on checked feeds; returns outputs by name, in the artifact's output order."""
        checked = check_feeds(self.inputs, feeds)
        self.open()
        with contextlib.nullcontext() if self.thread_safe else self._lock():
            start = time.perf_counter()
            result = self._infer(checked)
            self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return result

    def generate(self, input_ids: Any, max_new_tokens: int = 32, **options: Any) -> np.ndarray:
        """Greedy decoding with the KV cache (decoder artifacts); returns prompt + new tokens, [batch, length].

        Options: attention_mask, eos_token_id, pad_token_id, decoder_start_token_id, forced_eos_token_id (see
        tracefuse.runtimes.generation); encoder-decoders return the decoder's tokens, start token first.
        """
        from tracefuse.runtimes.generation import greedy_generate

        return greedy_generate(self, input_ids, max_new_tokens, **options)

    def close(self) -> None:
        """Release the runtime session."""
        with self._lock():
            if self._opened:
                self._close()
                self._opened = False

    def __enter__(self) -> Runner:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        raise NotImplementedError

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        pass
