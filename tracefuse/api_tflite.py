"""Edge quantization of TFLite artifacts with ai-edge-quantizer recipes, validated by cosine to PyTorch.

Dynamic mode quantizes weights to int8 and activations at run time; weight-only mode stores int8
weights and computes in float; fp16 stores float16 weights (computes in float); static modes quantize
activations too (int8, or int16 for static-a16), calibrated on generated inputs, a user `.npz` or
tokenized sentences, each fitted to every fixed-shape signature. The new artifact records the recipe,
the calibration data used and the file size before and after, and is validated on LiteRT against the
PyTorch model at every signature's shape: cosine, SQNR and (for logits) top-1 agreement.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact, finalize, load_artifact, staged_artifact, write_manifest
from tracefuse.errors import ArtifactError, MissingDependencyError, TracefuseError

logger = logging.getLogger(__name__)

RECIPES = {"dynamic": "dynamic_wi8_afp32", "weight-only": "weight_only_wi8_afp32", "static": "static_wi8_ai8",
           "static-a16": "static_wi8_ai16", "fp16": "weight_only_wf16_afp32"}  # fp16: built here, no stock recipe
CALIBRATION_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class EdgeQuantizeResult:
    """The quantized artifact, its validation report (None without validation) and the pass entry."""

    artifact: Artifact
    report: dict[str, Any] | None
    entry: dict[str, Any]


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Cut or zero-pad every axis of `array` to `shape` (zeros: padding token, masked position)."""
    out = np.zeros(shape, dtype=array.dtype)
    region = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape, strict=True))
    out[region] = array[region]
    return out


def fit_calibration(arrays: dict[str, np.ndarray], inputs: Sequence[Any], sizes: dict[str, int]) -> list[dict]:
    """User calibration rows fitted to one fixed-shape signature: axis 0 of every array holds rows, which are
    cycled in groups of the signature's first axis; the other axes are cut or zero-padded to its sizes."""
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        raise TracefuseError("the calibration data lacks graph inputs", found=f"missing {', '.join(missing)}; has "
                             f"{', '.join(sorted(arrays)) or 'nothing'}",
                             fix=f"give one array per input: {', '.join(s.name for s in inputs)}")
    targets = {s.name: tuple(sizes[d] if isinstance(d, str) else int(d) for d in s.shape) for s in inputs}
    for s in inputs:
        if arrays[s.name].ndim != len(targets[s.name]) or len(arrays[s.name]) == 0:
            raise TracefuseError(f"calibration array '{s.name}' has the wrong rank",
                                 found=f"shape {list(arrays[s.name].shape)}",
                                 fix=f"give rows shaped like the input {list(s.shape)} (axis 0: samples)")
    rows = min(len(arrays[s.name]) for s in inputs)
    group = targets[inputs[0].name][0]
    samples = []
    for start in range(0, rows, group):
        take = [(start + k) % rows for k in range(group)]
        samples.append({s.name: _fit(arrays[s.name][take], targets[s.name]).astype(s.dtype) for s in inputs})
    return samples


def _calibration(art: Artifact, samples: int, arrays: dict[str, np.ndarray] | None) -> dict[str, list[dict[str, Any]]]:
    """Calibration inputs per signature, keyed as litert-torch names them (args_0, args_1, ...): fitted from
    `arrays` when given, else `samples` generated ones."""
    from tracefuse.validation.inputs import generate_inputs

    m = art.manifest
    data = {}
    for sig in m.export.get("signatures") or []:
        if arrays is not None:
            feeds_list = fit_calibration(arrays, m.inputs, sig["sizes"])
        else:
            feeds_list = [generate_inputs(m.inputs, sig["sizes"], seed=100 + i) for i in range(samples)]
        data[sig["name"]] = [{f"args_{j}": feeds[s.name] for j, s in enumerate(m.inputs)} for feeds in feeds_list]
    return data


def _calibration_arrays(art: Artifact, calibration, texts) -> tuple[dict[str, np.ndarray] | None, str]:
    """The user's calibration rows (from an .npz, or tokenized sentences) and a description for the manifest."""
    from tracefuse.validation.inputs import load_npz

    if calibration is not None:
        return load_npz(calibration), f"file:{Path(calibration).name}"
    if texts:
        from tracefuse.api import tokenize

        bundled = (art.manifest.preprocessor or {}).get("dir")
        checkpoint = art.path / bundled if bundled else art.manifest.source.get("path")
        tokens = tokenize(Path(checkpoint) if checkpoint else None, texts, [s.name for s in art.manifest.inputs])
        return tokens, f"text:{len(texts)} sentences"
    return None, f"generated:{CALIBRATION_SAMPLES} per signature"


def quality(report: dict[str, Any]) -> dict[str, float | None]:
    """The worst cosine, SQNR (dB) and top-1 agreement over every output of every case of a report."""
    outputs = [o for c in report["cases"] for o in c["outputs"]]

    def worst(key: str) -> float | None:
        values = [float(o[key]) for o in outputs if o.get(key) is not None]
        return min(values) if values else None

    return {"min_cosine": worst("cosine"), "min_sqnr_db": worst("sqnr_db"), "min_top1": worst("top1")}


def _recipe(mode: str) -> Any:
    from ai_edge_quantizer import recipe

    if mode != "fp16":
        return getattr(recipe, RECIPES[mode])()
    manager = recipe.recipe_manager.RecipeManager()  # float16 weights, float compute (float casting)
    manager.add_weight_only_config(regex=".*", operation_name=recipe.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=recipe.AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def _quantize_bytes(art: Artifact, mode: str, arrays: dict[str, np.ndarray] | None) -> bytes:
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as exc:
        raise MissingDependencyError("TFLite quantization needs ai-edge-quantizer",
                                     found=f"{type(exc).__name__}: {exc}",
                                     fix="pip install 'tracefuse[tflite]'") from exc
    qt = quantizer.Quantizer(str(art.graph_path), _recipe(mode))
    calibration = None
    if qt.need_calibration:
        calibration = qt.calibrate(_calibration(art, CALIBRATION_SAMPLES, arrays), num_threads=2)
    result = qt.quantize(calibration, enable_progress_report=False, enable_progress_bar=False)
    return bytes(result.quantized_model)


def quantize_tflite(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mode: str = "dynamic",
    min_cosine: float = 0.99,
    validate: bool = True,
    overwrite: bool = False,
    threads: int | None = None,
    calibration: str | os.PathLike[str] | None = None,
    calibration_texts: Sequence[str] | None = None,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
) -> EdgeQuantizeResult:
    """Quantize a TFLite artifact into a new artifact at `out`.

    Modes: dynamic (int8 weights, dynamic activations), weight-only (int8 weights, float compute), fp16
    (float16 weights, float compute), static (int8 weights and activations) and static-a16 (int16
    activations). The static modes calibrate on `calibration` (an .npz of named input rows), else on
    `calibration_texts` (tokenized with the artifact's bundled preprocessor or the source's tokenizer),
    else on inputs generated at each signature's shape; rows are fitted to every signature (see
    fit_calibration). Validation runs at every signature, plus `inputs` (.npz) and `texts`, and the report
    gets `quality` (worst cosine, SQNR, top-1) and `size`.
    """
    from tracefuse import api
    from tracefuse.validation.report import judge_by_cosine, summarize

    if mode not in RECIPES:
        raise TracefuseError(f"unknown TFLite quantization mode '{mode}'", fix=f"use one of: {', '.join(RECIPES)}")
    art = load_artifact(artifact)
    m = art.manifest
    if m.format != "tflite":
        raise ArtifactError(f"edge quantization rewrites TFLite artifacts; {artifact} is a {m.format} artifact",
                            fix="export with --format tflite")
    arrays, calibrated_on = _calibration_arrays(art, calibration, calibration_texts)
    start = time.perf_counter()
    data = _quantize_bytes(art, mode, arrays)
    before = art.graph_path.stat().st_size
    entry = {"name": f"tflite-quantize-{mode}", "recipe": RECIPES[mode],
             "seconds": round(time.perf_counter() - start, 3),
             "stats": {"size_before": before, "size_after": len(data), "size_ratio": round(len(data) / before, 4)},
             "input_graph_sha256": m.files.get(m.graph, {}).get("sha256")}
    if mode.startswith("static"):
        entry["calibration"] = calibrated_on
    tolerance = {**m.tolerance, "min_cosine": min_cosine}
    report = None
    with staged_artifact(out, overwrite=overwrite) as staging:
        for name in m.files:
            if name != m.graph:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(art.path / name, staging / name)
        (staging / m.graph).write_bytes(data)
        manifest = dataclasses.replace(m, passes=tuple(m.passes) + (entry,), tolerance=tolerance, validation=None)
        manifest = finalize(staging, manifest)
        if validate:
            report = api.validate(staging, threads=threads, inputs=inputs, texts=texts)
            judge_by_cosine(report, min_cosine)
            report["artifact"] = str(Path(out).absolute())
            report["size"] = entry["stats"]
            report["quality"] = entry["quality"] = quality(report)
            # Later `tracefuse validate` runs compare elementwise: allow twice the error measured now.
            worst = max((float(o.get("max_abs") or 0.0) for c in report["cases"] for o in c["outputs"]), default=0.0)
            tolerance["atol"] = max(float(tolerance.get("atol", 1e-4)), float(f"{2 * worst:.2g}"))
            manifest = dataclasses.replace(manifest, validation=summarize(report), tolerance=tolerance)
            write_manifest(staging, manifest)
    return EdgeQuantizeResult(load_artifact(out), report, entry)
