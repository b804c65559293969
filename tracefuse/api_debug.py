"""The public API of the divergence finder: `debug` (which module's output diverges from PyTorch first) and
`bisect_passes` (which optimization pass first moved the outputs past the tolerance).

Thin: module mapping and comparison live in tracefuse.validation.divergence, the per-pass check in
tracefuse.passes.manager (the `optimize --check` machinery). The artifact is read, never modified.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracefuse.artifact import Artifact, Manifest, load_artifact
from tracefuse.errors import ArtifactError, TracefuseError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def _onnx(path: str | os.PathLike[str]) -> Artifact:
    art = load_artifact(path)
    if art.manifest.format != "onnx":
        raise ArtifactError(f"tracefuse debug reads ONNX artifacts; {path} is a {art.manifest.format} artifact",
                            fix="export with --format onnx (the dynamo exporter records the module names it needs)")
    return art


def _check_modules(wrapper: Any, values: list, source: str) -> None:
    """Refuse a reference that lacks most of the modules the graph was exported from (the wrong model)."""
    names = {name for name, _ in wrapper.named_modules(remove_duplicate=False)}
    missing = [mv.module for mv in values if mv.module not in names]
    if len(missing) * 2 > len(values):
        raise TracefuseError(
            f"the reference {source} lacks {len(missing)} of the {len(values)} modules this graph was exported "
            "from: it is another model",
            found=f"no {', '.join(missing[:3])} in the reference",
            fix="pass the model this artifact was exported from as --reference")


def debug(
    artifact: str | os.PathLike[str],
    *,
    reference: str | None = None,
    inputs: str | os.PathLike[str] | None = None,
    tolerance: dict[str, float] | None = None,
    chunk: int | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Compare the output of every PyTorch module of the reference with the ONNX value it was exported to.

    The input case is the manifest's first validation shape, or the arrays of `inputs` (.npz). The
    tolerance is the manifest's, with `tolerance` (atol/rtol) overriding it. Returns the report of
    tracefuse.validation.divergence.find_divergence plus the artifact, reference and case; never raises on a
    mismatch (`passed` is False and `first_divergent` names the module).
    """
    from tracefuse import api
    from tracefuse.exporters.sources import load_source
    from tracefuse.graphs.intermediates import module_values
    from tracefuse.graphs.onnx_file import load_onnx
    from tracefuse.runtimes.base import check_feeds
    from tracefuse.validation.divergence import DEFAULT_CHUNK, find_divergence
    from tracefuse.validation.inputs import case_name, generate_inputs, load_npz

    progress(f"loading artifact {artifact}")
    art = _onnx(artifact)
    m = art.manifest
    model = load_onnx(art.graph_path)
    if not module_values(model):
        raise ArtifactError(
            f"the graph of {artifact} records no PyTorch module names in its node metadata",
            found=f"exporter {m.export.get('exporter', 'unknown')}",
            fix="export with the dynamo exporter (--exporter dynamo, the default); passes that rebuild nodes "
                "drop the names, so debug the artifact before `tracefuse optimize`")
    source = api.reference_source(m, reference)
    progress(f"loading reference {source}")
    loaded = load_source(source, None if m.task == "custom" else m.task)
    kwargs = {} if m.export.get("use_cache", True) else {"use_cache": False}
    wrapper, _ = api._reference(loaded, m.inputs, m.outputs, **kwargs, constants=m.export.get("constants"))
    _check_modules(wrapper, module_values(model), source)
    if inputs is not None:
        case, feeds = f"file:{Path(inputs).name}", load_npz(inputs)
    else:
        shape = (m.validation_shapes or ({},))[0]
        case, feeds = case_name(shape), generate_inputs(m.inputs, shape, seed=0)
    feeds = check_feeds(m.inputs, feeds)
    tol = {**m.tolerance, **(tolerance or {})}
    report = find_divergence(model, wrapper, feeds, [s.name for s in m.inputs], tol,
                             chunk=chunk or DEFAULT_CHUNK, threads=threads, progress=progress)
    if not report["compared"]:
        first = report["modules"][0] if report["modules"] else {}
        raise TracefuseError(
            "no module output of the graph could be compared with the reference's",
            found=f"{first.get('module')}: {first.get('skipped')}" if first else "no modules",
            fix="pass the model this artifact was exported from as --reference")
    return {"artifact": str(Path(artifact).absolute()), "reference_source": source, "case": case, **report}


def _reexport(manifest: Manifest, reference: str | None, out: Path, progress: Progress) -> Path:
    """Export the reference again as the manifest records it (exporter, opset, task), unvalidated."""
    from tracefuse import api

    source = api.reference_source(manifest, reference)
    progress(f"re-exporting {source} to recover the graph the passes were applied to")
    kwargs = {} if manifest.export.get("use_cache", True) else {"use_cache": False}
    api.export(source, out, task=None if manifest.task == "custom" else manifest.task,
               opset=manifest.export.get("opset"), exporter=manifest.export.get("exporter", "dynamo"),
               validate=False, **kwargs)
    return out


def bisect_passes(
    artifact: str | os.PathLike[str],
    base: str | os.PathLike[str] | None = None,
    *,
    reference: str | None = None,
    inputs: str | os.PathLike[str] | None = None,
    tolerance: dict[str, float] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Re-run the passes recorded in `artifact`'s manifest on `base` (the artifact they were applied to) with
    the pipeline's check mode: ONNX Runtime after every pass, compared to the unoptimized graph within the
    base's tolerance (or `tolerance`). Without `base`, the reference (`reference`, else the manifest's
    source) is exported again as the manifest records; a re-export whose graph differs from the recorded
    one is noted, not refused. Returns {"passes", "failed_pass", "steps", "skipped", "notes", "base"}.
    """
    art = _onnx(artifact)
    if not art.manifest.passes:
        raise TracefuseError(f"{artifact} records no passes: it was not produced by tracefuse optimize",
                             fix="give --bisect-passes the artifact that `tracefuse optimize` wrote")
    if base is not None:
        return _bisect(art, _onnx(base), inputs, tolerance, threads, progress, [])
    with tempfile.TemporaryDirectory(prefix="tracefuse-debug-") as tmp:
        base_art = _onnx(_reexport(art.manifest, reference, Path(tmp) / "base", progress))
        result = _bisect(art, base_art, inputs, tolerance, threads, progress, ["no --base given: the passes were "
                         "re-run on a fresh export of the reference"])
        result["base"] = None
        return result


def _bisect(art: Artifact, base_art: Artifact, inputs, tolerance: dict[str, float] | None, threads: int | None,
            progress: Progress, notes: list[str]) -> dict[str, Any]:
    from tracefuse.api_passes import _check_cases, _graph_sha
    from tracefuse.graphs.onnx_file import load_onnx
    from tracefuse.passes.base import available_passes
    from tracefuse.passes.manager import Pipeline

    entries = list(art.manifest.passes)
    recorded = entries[0].get("input_graph_sha256")
    if recorded and recorded != _graph_sha(base_art):
        found = f"its graph sha256 {_graph_sha(base_art)[:12]}…, the manifest records {str(recorded)[:12]}…"
        if not notes:  # a --base given by the user: the wrong artifact
            raise TracefuseError(f"{base_art.path} is not the artifact the passes were applied to", found=found,
                                 fix="give --base the exact artifact `tracefuse optimize` read")
        notes.append(f"the re-export differs from the graph the passes were applied to ({found}); other tool "
                     "versions may export another graph: give --base for an exact bisection")
    known = available_passes()
    names = [e["name"] for e in entries if e.get("name") in known]
    skipped = [e.get("name") for e in entries if e.get("name") not in known]
    if skipped:
        notes.append(f"not graph passes, not re-run: {', '.join(map(str, skipped))} (the quantization guard "
                     "checks its own numerics)")
    if not names:
        raise TracefuseError("none of the recorded passes is a registered graph pass",
                             found=", ".join(map(str, skipped)), fix="nothing to bisect")
    tol = {**base_art.manifest.tolerance, **(tolerance or {})}
    cases = _check_cases(base_art, inputs, None)
    progress(f"re-running {', '.join(names)} with a check after every pass")
    result = Pipeline.from_names(names).run(load_onnx(base_art.graph_path), check_cases=cases, tolerance=tol,
                                            raise_on_failure=False, threads=threads, progress=progress)
    steps = [{"name": s["name"], **({"check": s["check"]} if "check" in s else {})} for s in result.steps]
    return {"passes": names, "failed_pass": result.failed_pass, "steps": steps, "skipped": skipped, "notes": notes,
            "base": str(base_art.path)}
