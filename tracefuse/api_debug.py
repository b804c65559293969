"""The public API of the divergence finder: `debug` (which module's output diverges from PyTorch first) and
`bisect_passes` (which optimization pass first moved the outputs past the tolerance).

Thin: module mapping and comparison live in tracefuse.validation.divergence, the per-pass check in
tracefuse.passes.manager (the `optimize --check` machinery). The artifact is read, never modified.
"""

from __future__ import annotations

import logging
import os
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


def reference_source(manifest: Manifest, reference: str | None) -> str:
    """The model to compare against: `reference`, else the source the manifest records. As `validate` does,
    a module:factory source named only by the manifest is refused (the manifest is not signed)."""
    recorded = manifest.source.get("path") if manifest.source.get("kind") == "local" else None
    source = reference or recorded or manifest.source.get("id")
    if not source:
        raise TracefuseError("the manifest records no source to compare against", fix="pass --reference MODEL")
    if reference is None and manifest.source.get("kind") == "factory":
        raise TracefuseError(
            "this artifact's reference is Python code (a module:factory source), and tracefuse does not run "
            "code named by an artifact's manifest",
            found=f"source {source}", fix=f"pass it yourself if you trust it: --reference {source}")
    return str(source)


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
    source = reference_source(m, reference)
    progress(f"loading reference {source}")
    loaded = load_source(source, None if m.task == "custom" else m.task)
    kwargs = {} if m.export.get("use_cache", True) else {"use_cache": False}
    wrapper, _ = api._reference(loaded, m.inputs, m.outputs, **kwargs)
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
    return {"artifact": str(Path(artifact).absolute()), "reference_source": source, "case": case, **report}


def bisect_passes(
    artifact: str | os.PathLike[str],
    base: str | os.PathLike[str] | None,
    *,
    inputs: str | os.PathLike[str] | None = None,
    tolerance: dict[str, float] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Re-run the passes recorded in `artifact`'s manifest on `base` (the artifact they were applied to) with
    the pipeline's check mode: ONNX Runtime after every pass, compared to the unoptimized graph within the
    base's tolerance (or `tolerance`). Returns {"passes", "failed_pass", "steps", "skipped", "notes"}.
    """
    from tracefuse.api_passes import _check_cases, _graph_sha
    from tracefuse.graphs.onnx_file import load_onnx
    from tracefuse.passes.base import available_passes
    from tracefuse.passes.manager import Pipeline

    art = _onnx(artifact)
    entries = list(art.manifest.passes)
    if not entries:
        raise TracefuseError(f"{artifact} records no passes: it was not produced by tracefuse optimize",
                             fix="give --bisect-passes the artifact that `tracefuse optimize` wrote")
    if base is None:
        raise TracefuseError(
            "--bisect-passes re-runs the passes on the graph they were applied to, and the optimized artifact "
            "holds only the rewritten graph",
            fix="give --base ART, the artifact `tracefuse optimize` read (e.g. the output of tracefuse export)")
    base_art = _onnx(base)
    notes = []
    recorded = entries[0].get("input_graph_sha256")
    if recorded and recorded != _graph_sha(base_art):
        raise TracefuseError(
            f"{base} is not the artifact the passes were applied to",
            found=f"its graph sha256 {_graph_sha(base_art)[:12]}…, the manifest records {str(recorded)[:12]}…",
            fix="give --base the exact artifact `tracefuse optimize` read")
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
            "base": str(Path(base).absolute())}
