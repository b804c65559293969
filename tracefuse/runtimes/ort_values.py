"""Run an in-memory ONNX model (serialized bytes) on ONNX Runtime CPU and fetch named values: used to read
intermediate values exposed as extra graph outputs (tracefuse.graphs.intermediates)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)


def run_values(model: bytes | str, feeds: Mapping[str, np.ndarray], names: Sequence[str], *,
               threads: int | None = None) -> dict[str, np.ndarray]:
    """Build a CPU session for the serialized model (or the model file at that path), run it once on `feeds`,
    return the named values.

    The session is dropped before returning, so its memory is released between calls.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        raise ArtifactError(
            f"ONNX Runtime {ort.__version__} cannot load the graph with its intermediate values exposed",
            found=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__,
            fix="check that the artifact itself loads (tracefuse validate), or report the graph",
        ) from exc
    wanted = {i.name for i in session.get_inputs()}
    values = session.run(list(names), {k: v for k, v in feeds.items() if k in wanted})
    del session
    return dict(zip(names, values, strict=True))
