"""Native TensorRT runner (`--runtime tensorrt`): runs a compiled engine artifact (`tracefuse compile --target
tensorrt`), or builds one from an ONNX artifact through the engine cache (tracefuse.runtimes.trt_build).

Device buffers are torch CUDA tensors; a call sets the input shapes on the execution context, binds the
tensors' addresses, runs `execute_async_v3` on a CUDA stream and returns numpy arrays. `infer_device`
takes and returns CUDA tensors with no host copy (used by `tracefuse bench`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.base import Runner
from tracefuse.runtimes.gpu_config import (
    ProfileShapes,
    check_in_profile,
    gpu_options,
    validation_tolerance,
)

logger = logging.getLogger(__name__)


def engine_profile(artifact: Artifact) -> ProfileShapes:
    """The optimization profile recorded in a compiled engine artifact's manifest."""
    try:
        raw = artifact.manifest.export["tensorrt"]["profile"]
        return {name: tuple(tuple(int(d) for d in s) for s in shapes) for name, shapes in raw.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"the manifest of {artifact.path} records no TensorRT optimization profile",
                            found=f"export.tensorrt.profile: {exc}",
                            fix="recompile it: tracefuse compile ONNX_ARTIFACT --target tensorrt -o OUT") from exc


class TensorRtRunner(Runner):
    """Runs a TensorRT engine on one CUDA device (thread-safe: calls are serialized on one context)."""

    name = "tensorrt"
    formats = ("tensorrt", "onnx")  # an engine artifact, or an ONNX one built through the engine cache (CI matrix)
    thread_safe = False  # one execution context and one stream

    def __init__(self, artifact: Artifact, *, threads: int | None = None, **options: Any) -> None:
        if artifact.manifest.format not in self.formats:
            raise ArtifactError(f"runtime {self.name} runs TensorRT engine or ONNX artifacts",
                                found=f"a {artifact.manifest.format} artifact", fix="choose a runtime for that format")
        super().__init__(artifact.manifest.inputs, artifact.manifest.outputs)
        self.artifact = artifact
        self.options = gpu_options(options)
        built = artifact.manifest.export.get("tensorrt", {})
        lower = bool(self.options.fp16 or self.options.tf32 or built.get("fp16_flag") or built.get("tf32"))
        self.tolerance_floor = validation_tolerance(artifact.manifest, fp16_kernels=lower)
        self.build_report: dict[str, Any] = {}
        self.profile: ProfileShapes = {}
        self._engine = self._context = self._stream = None

    def _open(self) -> None:
        from tracefuse.runtimes.trt_build import engine_for, import_tensorrt, require_cuda
        from tracefuse.runtimes.trusted import verified_bytes

        trt = import_tensorrt()
        require_cuda(self.options.device_id)
        import torch

        if self.artifact.manifest.format == "tensorrt":
            data = verified_bytes(self.artifact, self.artifact.manifest.graph)
            self.profile = engine_profile(self.artifact)
            self.build_report = dict(self.artifact.manifest.export.get("tensorrt", {}))
        else:
            data, self.profile, self.build_report = engine_for(self.artifact, self.options)
        self._device = torch.device("cuda", self.options.device_id)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} cannot load the engine of {self.artifact.path}",
                                found="deserialize_cuda_engine returned None (built by another TensorRT version "
                                      "or for another GPU?)",
                                fix="recompile on this machine: tracefuse compile ONNX_ARTIFACT --target tensorrt")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self._device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._dtypes = {n: _torch_dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._input_names = {n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}

    def infer_device(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run on torch tensors (moved to the device and engine dtype if they are not); returns CUDA tensors."""
        import torch

        self.open()
        check_in_profile(self.profile, {k: tuple(v.shape) for k, v in feeds.items() if k in self.profile})
        for name in self._input_names:
            tensor = feeds[name].to(self._device, self._dtypes[name]).contiguous()
            tensor.record_stream(self._stream)  # not reused by the allocator before the engine has read it
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for spec in self.outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            outputs[spec.name] = torch.empty(shape, dtype=self._dtypes[spec.name], device=self._device)
            outputs[spec.name].record_stream(self._stream)
            self._context.set_tensor_address(spec.name, outputs[spec.name].data_ptr())
        self._stream.wait_stream(torch.cuda.current_stream(self._device))  # the input copies above
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise ArtifactError("TensorRT's execute_async_v3 failed", fix="run with -v to see TensorRT's log")
        torch.cuda.current_stream(self._device).wait_stream(self._stream)
        return outputs

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        outputs = self.infer_device({k: torch.from_numpy(v) for k, v in feeds.items()})
        torch.cuda.synchronize(self._device)
        return {spec.name: outputs[spec.name].cpu().numpy().astype(spec.dtype, copy=False) for spec in self.outputs}

    def _close(self) -> None:
        self._context = self._engine = self._stream = None


def _torch_dtype(np_dtype) -> Any:
    import torch

    return {np.float32: torch.float32, np.float16: torch.float16, np.int64: torch.int64, np.int32: torch.int32,
            np.bool_: torch.bool, np.int8: torch.int8, np.uint8: torch.uint8}[np.dtype(np_dtype).type]

