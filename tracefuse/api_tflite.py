"""Edge quantization of TFLite artifacts with ai-edge-quantizer recipes, validated by cosine to PyTorch.

Dynamic mode quantizes weights to int8 and activations at run time; weight-only mode stores int8
weights and computes in float. The new artifact records the recipe, the file size before and after,
and is validated on LiteRT against the PyTorch model at every signature's shape.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tracefuse.artifact import Artifact, finalize, load_artifact, staged_artifact, write_manifest
from tracefuse.errors import ArtifactError, MissingDependencyError, TracefuseError

logger = logging.getLogger(__name__)

RECIPES = {"dynamic": "dynamic_wi8_afp32", "weight-only": "weight_only_wi8_afp32", "static": "static_wi8_ai8",
           "static-a16": "static_wi8_ai16"}
CALIBRATION_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class EdgeQuantizeResult:
    """The quantized artifact, its validation report (None without validation) and the pass entry."""

    artifact: Artifact
    report: dict[str, Any] | None
    entry: dict[str, Any]


def _calibration(art: Artifact, samples: int) -> dict[str, list[dict[str, Any]]]:
    """Generated calibration inputs per signature, keyed as litert-torch names them (args_0, args_1, ...)."""
    from tracefuse.validation.inputs import generate_inputs

    m = art.manifest
    data = {}
    for sig in m.export.get("signatures") or []:
        rows = []
        for i in range(samples):
            feeds = generate_inputs(m.inputs, sig["sizes"], seed=100 + i)
            rows.append({f"args_{j}": feeds[s.name] for j, s in enumerate(m.inputs)})
        data[sig["name"]] = rows
    return data


def _quantize_bytes(art: Artifact, mode: str) -> bytes:
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise MissingDependencyError("TFLite quantization needs ai-edge-quantizer",
                                     found=f"{type(exc).__name__}: {exc}",
                                     fix="pip install 'tracefuse[tflite]'") from exc
    qt = quantizer.Quantizer(str(art.graph_path), getattr(recipe, RECIPES[mode])())
    calibration = None
    if qt.need_calibration:
        calibration = qt.calibrate(_calibration(art, CALIBRATION_SAMPLES), num_threads=2)
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
) -> EdgeQuantizeResult:
    """Quantize a TFLite artifact into a new artifact at `out`.

    Modes: dynamic (int8 weights, dynamic activations), weight-only (int8 weights, float compute),
    static (int8 weights and activations) and static-a16 (int16 activations); the static modes
    calibrate on inputs generated at each signature's shape.
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
    start = time.perf_counter()
    data = _quantize_bytes(art, mode)
    before = art.graph_path.stat().st_size
    entry = {"name": f"tflite-quantize-{mode}", "recipe": RECIPES[mode],
             "seconds": round(time.perf_counter() - start, 3),
             "stats": {"size_before": before, "size_after": len(data), "size_ratio": round(len(data) / before, 4)},
             "input_graph_sha256": m.files.get(m.graph, {}).get("sha256")}
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
            report = api.validate(staging, threads=threads)
            judge_by_cosine(report, min_cosine)
            report["artifact"] = str(Path(out).absolute())
            report["size"] = entry["stats"]
            # Later `tracefuse validate` runs compare elementwise: allow twice the error measured now.
            worst = max((float(o.get("max_abs") or 0.0) for c in report["cases"] for o in c["outputs"]), default=0.0)
            tolerance["atol"] = max(float(tolerance.get("atol", 1e-4)), float(f"{2 * worst:.2g}"))
            manifest = dataclasses.replace(manifest, validation=summarize(report), tolerance=tolerance)
            write_manifest(staging, manifest)
    return EdgeQuantizeResult(load_artifact(out), report, entry)
