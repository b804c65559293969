"""LiteRT runner: a `.tflite` artifact on `ai_edge_litert.interpreter.Interpreter` (XNNPACK on, threads),
falling back to `tflite_runtime.interpreter.Interpreter` when only that is installed.

A TFLite artifact holds one fixed-shape signature per supported shape (see the tflite exporter); the
runner picks the signature whose axis sizes match the feeds and says which shapes exist otherwise.
TFLite files hold no executable code, so they are opened by path after the usual load-time hash check.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import FeedError, MissingDependencyError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.trusted import require_format

logger = logging.getLogger(__name__)

INSTALL = "pip install 'tracefuse[tflite]'"


def interpreter_class() -> Any:
    """The TFLite Interpreter class: ai_edge_litert's, else tflite_runtime's; MissingDependencyError if neither."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise MissingDependencyError(
                "running TFLite artifacts needs ai-edge-litert (or tflite-runtime)",
                found="neither is installed", fix=INSTALL,
            ) from exc
        logger.info("ai-edge-litert is missing; using tflite_runtime")
    return Interpreter


def ordered_keys(details: dict[str, Any]) -> list[str]:
    """Signature IO names in argument order (litert-torch names them args_0.. / output_0..)."""
    return sorted(details, key=lambda k: int(k.rsplit("_", 1)[-1]))


def _scale(detail: dict[str, Any]) -> tuple[float, int]:
    scale, zero = detail.get("quantization") or (0.0, 0)
    return float(scale), int(zero)


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float feed for an input that static quantization made integer: q = round(x / scale) + zero_point."""
    scale, zero = _scale(detail)
    dtype = np.dtype(detail["dtype"])
    if scale == 0.0 or dtype.kind not in "iu" or value.dtype.kind != "f":
        return value
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(value: np.ndarray, detail: dict[str, Any], dtype: str) -> np.ndarray:
    """An integer output of a statically quantized graph back to the float the manifest promises:
    (q - zero_point) * scale. Outputs that are not quantized pass unchanged."""
    scale, zero = _scale(detail)
    if scale == 0.0 or value.dtype.kind not in "iu" or np.dtype(dtype).kind != "f":
        return value
    return ((value.astype(np.float32) - zero) * scale).astype(dtype)


class LiteRtRunner(Runner):
    """Runs a TFLite artifact; one signature per fixed shape, chosen from the feeds' axis sizes."""

    name = "litert"
    # One TFLite interpreter must not run two invocations at once: Runner serializes infer.
    thread_safe = False

    def __init__(self, artifact: Artifact, *, threads: int | None = None) -> None:
        require_format(artifact, self.name, "tflite")
        super().__init__(artifact.manifest.inputs, artifact.manifest.outputs)
        self.artifact = artifact
        self.threads = threads
        self.signatures = list(artifact.manifest.export.get("signatures") or [])
        self._interpreter = None
        self._runners: dict[str, Any] = {}

    def _open(self) -> None:
        cls = interpreter_class()
        kwargs: dict[str, Any] = {"model_path": str(self.artifact.graph_path)}
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        self._interpreter = cls(**kwargs)  # the default op resolver applies XNNPACK on CPU

    def _signature(self, feeds: dict[str, np.ndarray]) -> str:
        sizes = {d: int(feeds[s.name].shape[i]) for s in self.inputs for i, d in enumerate(s.shape)
                 if isinstance(d, str)}
        for sig in self.signatures:
            if {k: int(v) for k, v in sig["sizes"].items()} == sizes:
                return sig["name"]
        if not self.signatures:  # an artifact with a single default signature
            return next(iter(self._interpreter.get_signature_list()))
        supported = ", ".join(",".join(f"{k}={v}" for k, v in s["sizes"].items()) for s in self.signatures)
        raise FeedError(
            "this TFLite artifact has fixed-shape signatures and none matches the inputs",
            found=",".join(f"{k}={v}" for k, v in sizes.items()),
            fix=f"give inputs of one of these shapes: {supported}; or re-export with --shapes",
        )

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self._signature(feeds)
        runner = self._runners.get(name)
        if runner is None:
            runner = self._runners[name] = self._interpreter.get_signature_runner(name)
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
        in_keys, out_keys = ordered_keys(in_details), ordered_keys(out_details)
        result = runner(**{k: _quantize(np.ascontiguousarray(feeds[s.name]), in_details[k])
                           for k, s in zip(in_keys, self.inputs, strict=True)})
        return {s.name: _dequantize(np.asarray(result[k]), out_details[k], s.dtype)
                for k, s in zip(out_keys, self.outputs, strict=True)}

    def _close(self) -> None:
        self._runners.clear()
        self._interpreter = None
