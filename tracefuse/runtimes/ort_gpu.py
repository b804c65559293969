"""ONNX Runtime on NVIDIA GPUs: the CUDA execution provider (`ort-cuda`) and the TensorRT one (`ort-trt`).

Both need onnxruntime-gpu (`pip install 'tracefuse[gpu]'`). ONNX Runtime falls back to the CPU without a
word when a provider cannot load (no GPU, missing CUDA or TensorRT libraries); these runners check
`session.get_providers()` after opening and raise, unless `allow_fallback` was given (then a warning is
logged and the runner runs where ONNX Runtime put it).

Inputs and outputs go through IO binding: feeds are copied to the device once per call and outputs stay
on the device until they are copied back, and `run_bound` runs on device tensors (torch CUDA tensors or
OrtValues) with no host copy at all (used by `tracefuse bench`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact
from tracefuse.errors import ArtifactError
from tracefuse.runtimes.gpu_config import (
    check_providers,
    cuda_provider_options,
    gpu_options,
    trt_provider_options,
    validation_tolerance,
)
from tracefuse.runtimes.ort_cpu import OrtCpuRunner

logger = logging.getLogger(__name__)


class OrtGpuRunner(OrtCpuRunner):
    """Common part of the ONNX Runtime GPU runners: provider check and IO binding."""

    name = "ort-gpu"
    provider = ""

    def __init__(self, artifact: Artifact, *, threads: int | None = None, **options: Any) -> None:
        super().__init__(artifact, threads=threads)
        self.options = gpu_options(options)
        self.on_asked_provider = False
        self.device = "cuda"
        self.tolerance_floor = validation_tolerance(artifact.manifest, fp16_kernels=self._fp16_kernels())

    def _fp16_kernels(self) -> bool:
        return self.options.tf32

    def _provider_options(self) -> dict[str, str]:
        raise NotImplementedError

    def _providers(self) -> list:
        return [(self.provider, self._provider_options()), "CPUExecutionProvider"]

    def _open(self) -> None:
        import onnxruntime as ort

        if self.provider in ort.get_available_providers() and hasattr(ort, "preload_dlls"):
            try:  # CUDA / cuDNN from the nvidia-* wheels (torch's), so the provider does not fail to load them
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - best effort; the provider check below reports a failure
                logger.info("onnxruntime.preload_dlls failed: %s", exc)
        try:
            super()._open()
        except ArtifactError as exc:
            raise ArtifactError(
                f"ONNX Runtime {ort.__version__} could not create a session with {self.provider}", found=exc.found,
                fix="check that the CUDA, cuDNN and TensorRT libraries match this onnxruntime-gpu (docs/gpu.md); "
                    "if the message names the opset or IR version, re-export with --opset") from exc
        active = self._session.get_providers()
        self.on_asked_provider = check_providers(self.provider, active, allow_fallback=self.options.allow_fallback,
                                                 available=ort.get_available_providers())
        # On a fallback the session lives on the CPU: bind there, or ORT copies to a device it does not use.
        self.device = "cuda" if active and active[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") \
            else "cpu"
        logger.info("%s session on %s (binding on %s)", self.name, ", ".join(active), self.device)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self.bind(feeds)
        self._session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        return dict(zip([o.name for o in self.outputs], values))

    def bind(self, feeds: Mapping[str, Any]):
        """An IO binding with `feeds` on the session's device and every output left on the device.

        A feed may be a numpy array (copied to the device once), an OrtValue, or a torch tensor: a CUDA
        tensor is bound by its data pointer without a copy (keep it alive and contiguous while the binding
        is used).
        """
        import onnxruntime as ort

        self.open()
        binding = self._session.io_binding()
        device_id = self.options.device_id if self.device == "cuda" else 0
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            elif type(value).__module__.startswith("torch") and value.is_cuda:
                value = value.contiguous()
                binding.bind_input(name, "cuda", value.device.index or 0, _numpy_dtype(value),
                                   tuple(value.shape), value.data_ptr())
            else:
                array = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, device_id))
        for spec in self.outputs:
            binding.bind_output(spec.name, self.device, device_id)
        return binding

    def run_bound(self, binding) -> None:
        """Run on a binding from `bind` (outputs stay on the device: `binding.get_outputs()`)."""
        self._session.run_with_iobinding(binding)


class OrtCudaRunner(OrtGpuRunner):
    """ONNX Runtime with the CUDA execution provider; precision comes from the graph (fp16 pass for fp16)."""

    name = "ort-cuda"
    provider = "CUDAExecutionProvider"

    def _provider_options(self) -> dict[str, str]:
        return cuda_provider_options(self.options)


class OrtTrtRunner(OrtGpuRunner):
    """ONNX Runtime with the TensorRT execution provider (CUDA runs what TensorRT does not take)."""

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"

    def _fp16_kernels(self) -> bool:
        # TensorRT runs fp32 matmuls in TF32 by default, and the TensorRT provider has no option to stop it.
        return True

    def _provider_options(self) -> dict[str, str]:
        options = trt_provider_options(self.artifact.manifest, self.options)
        for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
        return options

    def _providers(self) -> list:
        cuda = ("CUDAExecutionProvider", cuda_provider_options(self.options))
        return [(self.provider, self._provider_options()), cuda, "CPUExecutionProvider"]


def _numpy_dtype(tensor) -> type:
    import torch

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32,
            torch.bool: np.bool_, torch.int8: np.int8, torch.uint8: np.uint8}[tensor.dtype]
