"""Can this ONNX Runtime run that model? Checked before a session is created, with both versions named.

ONNX Runtime's own refusal ("Unsupported model IR version: 11, max supported IR version: 10") is a
common complaint because it names neither the package version nor the fix. The limits of the
installed ONNX Runtime are probed once per process with two tiny in-memory models, and a model's IR
version and opset are read from the head of its protobuf without parsing the graph or the weights.
"""

from __future__ import annotations

import functools
import logging
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)

_PROBE_IR = 1_000_000
_PROBE_OPSET = 10_000


@dataclass(frozen=True)
class OrtLimits:
    """The newest IR version and default-domain opset the installed ONNX Runtime accepts (None: unknown)."""

    version: str
    max_ir_version: int | None
    max_opset: int | None


def _probe(ir_version: int, opset: int) -> str:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT's Fail type; the message carries the limit
        return str(exc)
    return ""


@functools.lru_cache(maxsize=1)
def ort_limits() -> OrtLimits:
    """Probe the installed ONNX Runtime's limits (cached for the process)."""
    import onnxruntime as ort

    ir = re.search(r"max supported IR version: (\d+)", _probe(_PROBE_IR, 13))
    opset = re.search(r"till opset (\d+)", _probe(8, _PROBE_OPSET))
    limits = OrtLimits(ort.__version__, int(ir.group(1)) if ir else None, int(opset.group(1)) if opset else None)
    logger.debug("ONNX Runtime limits: %s", limits)
    return limits


def _varint(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int):
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, (pos, pos + size)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def model_versions(path: Path) -> tuple[int | None, int | None]:
    """(IR version, default-domain opset) read from an ONNX file's top-level fields; (None, None) if unreadable."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            ir_version = opset = None
            for number, value in _fields(buf, 0, len(buf)):
                if number == 1 and isinstance(value, int):  # ModelProto.ir_version
                    ir_version = value
                elif number == 8 and isinstance(value, tuple):  # ModelProto.opset_import
                    domain, version = b"", None
                    for sub, subval in _fields(buf, *value):
                        if sub == 1 and isinstance(subval, tuple):
                            domain = bytes(buf[subval[0]:subval[1]])
                        elif sub == 2 and isinstance(subval, int):
                            version = subval
                    if domain in (b"", b"ai.onnx"):
                        opset = version
            return ir_version, opset
    except (OSError, ValueError) as exc:
        logger.debug("cannot read the versions of %s: %s", path, exc)
        return None, None


def check_supported(path: Path) -> None:
    """Raise ArtifactError when the installed ONNX Runtime is too old for the model at `path`."""
    ir_version, opset = model_versions(path)
    limits = ort_limits()
    too_new = []
    if ir_version is not None and limits.max_ir_version is not None and ir_version > limits.max_ir_version:
        too_new.append(f"IR version {ir_version} (this ONNX Runtime reads up to {limits.max_ir_version})")
    if opset is not None and limits.max_opset is not None and opset > limits.max_opset:
        too_new.append(f"opset {opset} (this ONNX Runtime supports up to {limits.max_opset})")
    if too_new:
        raise ArtifactError(
            f"{path} needs a newer ONNX Runtime than the installed onnxruntime {limits.version}",
            found="the model uses " + " and ".join(too_new),
            fix="upgrade onnxruntime (pip install -U onnxruntime), or re-export the model with an older "
            "--opset / onnx package on the machine that produced it",
        )
