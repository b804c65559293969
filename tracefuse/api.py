"""The public Python API: export, validate, load, run, inspect. Thin: it only wires the packages together."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tracefuse.artifact import Artifact, Manifest, finalize, load_artifact, staged_artifact, write_manifest
from tracefuse.errors import SourceError, TracefuseError
from tracefuse.resources import check_export, check_source
from tracefuse.runtimes import open_runner
from tracefuse.runtimes.base import Runner
from tracefuse.validation.inputs import case_name, generate_inputs, load_npz
from tracefuse.validation.report import summarize
from tracefuse.validation.steps import add_step_cases
from tracefuse.validation.validate import validate_runner

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
_TOOLS = ("tracefuse", "torch", "transformers", "onnx", "onnx-ir", "onnxscript", "onnxruntime")


@dataclass(frozen=True)
class ExportResult:
    """What `export` produced: the artifact and its validation report (None with validate=False)."""

    artifact: Artifact
    report: dict[str, Any] | None


def _noop(_: str) -> None:
    pass


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that shape an artifact."""
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _encoder_pair(loaded, artifact: Artifact, runtime: str | None, threads: int | None):
    """(runtime, PyTorch) runners of an encoder-decoder artifact's encoder graph; None for other artifacts."""
    if "encoder" not in artifact.manifest.export:
        return None
    from tracefuse.exporters.wrapper import FlatWrapper
    from tracefuse.runtimes.seq2seq_generation import encoder_artifact
    from tracefuse.runtimes.torch_reference import TorchReferenceRunner

    encoder = encoder_artifact(artifact)
    inputs, outputs = encoder.manifest.inputs, encoder.manifest.outputs
    wrapper = FlatWrapper(loaded.module.get_encoder(), tuple(s.name for s in inputs), tuple(s.name for s in outputs))
    return open_runner(encoder, runtime, threads=threads).open(), TorchReferenceRunner(wrapper, inputs, outputs)


def _reference(loaded, manifest_inputs, manifest_outputs, use_cache: bool = True,
               constants: dict[str, Any] | None = None):
    from tracefuse.exporters.cache_wrapper import make_wrapper
    from tracefuse.runtimes.torch_reference import TorchReferenceRunner

    names = tuple(s.name for s in manifest_inputs), tuple(s.name for s in manifest_outputs)
    wrapper = make_wrapper(loaded.module, *names, use_cache=use_cache, constants=constants)
    return wrapper, TorchReferenceRunner(wrapper, manifest_inputs, manifest_outputs)


def _refuse_output_over_source(source: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """Refuse an output directory that is, or contains, the model's own checkpoint: replacing it would delete it."""
    if not source.get("path"):
        return
    target, model_dir = Path(out).resolve(), Path(source["path"]).resolve()
    if model_dir == target or model_dir.is_relative_to(target):
        raise TracefuseError(
            f"the output directory {target} holds the model being exported ({model_dir}); writing the artifact "
            "there would delete the model",
            fix="choose an output path outside the checkpoint directory",
        )


def tokenize(checkpoint: Path | None, texts: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Tokenize sentences with the checkpoint's own tokenizer into feeds for the given input names."""
    if checkpoint is None or not any(checkpoint.glob("tokenizer*")) and not (checkpoint / "vocab.txt").exists():
        raise SourceError(
            "text inputs need the model's tokenizer, and this model source has none",
            found=str(checkpoint) if checkpoint else "a model with no checkpoint directory",
            fix="use a checkpoint directory with tokenizer files, or give --inputs FILE.npz",
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    encoded = tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
    feeds = {}
    for name in input_names:
        if name not in encoded:
            raise SourceError(f"the tokenizer does not produce the model input '{name}'")
        feeds[name] = np.asarray(encoded[name]).astype(np.int64)
    return feeds


def _cases(manifest: Manifest, inputs: str | os.PathLike[str] | None, texts: Sequence[str] | None, checkpoint):
    shapes = manifest.validation_shapes
    cases = [(case_name(s), generate_inputs(manifest.inputs, s, seed=i)) for i, s in enumerate(shapes)]
    if inputs is not None:
        cases.append((f"file:{Path(inputs).name}", load_npz(inputs)))
    if texts:
        tokens = tokenize(checkpoint, texts, [s.name for s in manifest.inputs])
        tokens = {s.name: tokens[s.name].astype(s.dtype) for s in manifest.inputs}  # TFLite takes int32 ids
        cases.append((f"text:{len(texts)} sentences", tokens))
    return cases


def export(
    model: str,
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    task: str | None = None,
    opset: int | None = None,
    exporter: str = "dynamo",
    options: dict[str, Any] | None = None,
    validate: bool = True,
    overwrite: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
    max_memory: int | None = None,
    use_cache: bool = True,
    with_preprocessor: bool = False,
    fixed_axes: Sequence[str] = (),
) -> ExportResult:
    """Export `model` (a source string, see tracefuse.exporters.sources) to an artifact directory at `out`.

    The artifact is assembled in a staging directory and renamed into place only when complete. With
    `validate`, it is run on ONNX Runtime at the spec's validation shapes (and on `inputs` / `texts`)
    and compared to PyTorch; the summary is stored in the manifest. Memory (capped by `max_memory`
    bytes) and disk space are checked first (tracefuse.resources). `use_cache=False` exports a decoder-only
    model as one plain graph (no past key/values in or out); the manifest records it as export.use_cache.
    `with_preprocessor` bundles the source's tokenizer / processor files into `preprocessor/` (hashed, listed
    in the manifest's `preprocessor`; see tracefuse.exporters.preprocessor). `fixed_axes` names dynamic axes
    to fix at their trace size ("*": all but batch; archspec.fix_axes), recorded as export.fixed_axes.
    """
    from tracefuse.exporters import FORMATS, export_graph
    from tracefuse.exporters.archspec import constant_values, fix_axes, resolve_spec
    from tracefuse.exporters.cache_wrapper import make_wrapper, probe_model_outputs
    from tracefuse.exporters.decoder_spec import has_cache_inputs, runs_only_without_cache
    from tracefuse.exporters.seq2seq_spec import export_extras
    from tracefuse.exporters.sources import load_source

    if format not in FORMATS:
        raise TracefuseError(f"unknown format '{format}'", fix=f"use one of: {', '.join(FORMATS)}")
    options = {"opset": opset, "exporter": exporter, **(options or {})}
    import torch

    progress(f"loading {model}")
    check_source(model, max_memory=max_memory)
    loaded = load_source(model, task)
    _refuse_output_over_source(loaded.source, out)
    check_export(loaded.module, out, max_memory=max_memory)
    pre = None
    if with_preprocessor:  # before the (slow) export, so a source without one fails at once
        from tracefuse.exporters.preprocessor import load_preprocessor

        pre = load_preprocessor(loaded)
    spec = resolve_spec(loaded, use_cache=use_cache)
    if use_cache and not has_cache_inputs(spec.input_names) and runs_only_without_cache(loaded):
        use_cache = False  # no attention layer keeps a cache (pure linear attention): as with --no-cache
    if fixed_axes:
        spec = fix_axes(spec, fixed_axes)
    shapes, constants = spec.validation_shapes, constant_values(spec)
    options.setdefault("validation_shapes", [dict(s) for s in shapes])  # fixed-shape formats (tflite) use these
    to_torch = lambda feeds: {k: torch.from_numpy(v) for k, v in feeds.items()}  # noqa: E731
    progress("probing outputs")
    outputs = probe_model_outputs(
        loaded.module, spec.input_names,
        to_torch(generate_inputs(spec.inputs, shapes[0])), shapes[0],
        to_torch(generate_inputs(spec.inputs, shapes[-1])), shapes[-1], use_cache=use_cache, constants=constants,
    )
    wrapper = make_wrapper(loaded.module, spec.input_names, tuple(o.name for o in outputs), use_cache=use_cache,
                           constants=constants)
    example = to_torch(generate_inputs(spec.inputs, spec.trace_shape, seed=1234))
    report = None
    with staged_artifact(out, overwrite=overwrite) as staging:
        progress(f"exporting to {format}")
        graph = export_graph(format, wrapper, example, spec.inputs, outputs, staging, options)
        extras = export_extras(loaded, spec, staging, format, options)  # encoder graph, generation token ids
        if pre is not None:
            from tracefuse.exporters.preprocessor import save_preprocessor

            progress(f"bundling the {pre.kind}")
            bundled = save_preprocessor(pre, staging)
        manifest = Manifest(
            format=format, graph=graph.files[0], source=loaded.source, task=loaded.task, inputs=graph.inputs,
            outputs=graph.outputs, validation_shapes=tuple(graph.info.get("validation_shapes") or shapes),
            tolerance=dict(spec.tolerance),
            export={**graph.info, "model_type": loaded.model_type, **extras,
                    **({} if use_cache else {"use_cache": False}),
                    **({"fixed_axes": list(fixed_axes)} if fixed_axes else {}),
                    **({"constants": constants} if constants else {})},
            tool_versions=tool_versions(), preprocessor=bundled if pre is not None else None,
        )
        manifest = finalize(staging, manifest)
        if validate:
            artifact = Artifact(staging, manifest)
            _, reference = _reference(loaded, manifest.inputs, manifest.outputs, use_cache, constants)
            runner = open_runner(artifact, runtime, threads=threads)
            progress(f"validating on {runner.name} against PyTorch")
            with runner:
                cases = _cases(manifest, inputs, texts, loaded.checkpoint_dir)
                report = validate_runner(runner, reference, cases, manifest.tolerance)
                add_step_cases(report, runner, reference, _encoder_pair(loaded, artifact, runtime, threads))
            report["artifact"] = str(Path(out).absolute())
            manifest = dataclasses.replace(manifest, validation=summarize(report))
            write_manifest(staging, manifest)
    return ExportResult(load_artifact(out), report)


def reference_source(manifest: Manifest, reference: str | None) -> str:
    """The model to compare an artifact against: `reference`, else the source its manifest records. A
    module:factory source named only by the manifest is refused: the manifest is not signed, and running
    the Python it names would let whoever edits it run code here."""
    recorded = manifest.source.get("path") if manifest.source.get("kind") == "local" else None
    source = reference or recorded or manifest.source.get("id")
    if not source:
        raise TracefuseError("the manifest records no source to compare against", fix="pass --reference MODEL")
    if reference is None and manifest.source.get("kind") == "factory":
        raise TracefuseError(
            "this artifact's reference is Python code (a module:factory source), and tracefuse does not run "
            "code named by an artifact's manifest",
            found=f"source {source}",
            fix=f"pass it yourself if you trust it: --reference {source}",
        )
    return str(source)


def validate(
    artifact: str | os.PathLike[str],
    *,
    reference: str | None = None,
    runtime: str | None = None,
    inputs: str | os.PathLike[str] | None = None,
    texts: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Progress = _noop,
    tolerance: dict[str, float] | None = None,
    runtime_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate an artifact on `runtime` against PyTorch; returns the report (never raises on a mismatch).

    `runtime_options` go to the GPU runners (tracefuse.runtimes.gpu_config); a runner that may run fp16
    kernels raises the tolerance to its `tolerance_floor`.

    The reference defaults to the source recorded in the manifest; `tolerance` (atol/rtol) overrides the
    manifest's.
    """
    from tracefuse.exporters.sources import load_source

    progress(f"loading artifact {artifact}")
    art = load_artifact(artifact)
    manifest = art.manifest
    source = reference_source(manifest, reference)
    progress(f"loading reference {source}")
    loaded = load_source(source, None if manifest.task == "custom" else manifest.task)
    notes = []
    recorded = manifest.source.get("config_sha256")
    if reference is None and recorded and loaded.source.get("config_sha256") != recorded:
        notes.append("the reference's config differs from the one the artifact was exported from")
    _, ref_runner = _reference(loaded, manifest.inputs, manifest.outputs, manifest.export.get("use_cache", True),
                               manifest.export.get("constants"))
    runner = open_runner(art, runtime, threads=threads, options=runtime_options)
    progress(f"validating on {runner.name}")
    with runner:
        report = validate_runner(runner, ref_runner, _cases(manifest, inputs, texts, loaded.checkpoint_dir),
                                 _floor({**manifest.tolerance, **(tolerance or {})}, runner))
        add_step_cases(report, runner, ref_runner, _encoder_pair(loaded, art, runtime, threads))
    report["artifact"] = str(Path(artifact).absolute())
    report["reference_source"] = str(source)
    if notes:
        report["notes"] = notes
    return report


def _floor(tolerance: dict[str, float], runner: Runner) -> dict[str, float]:
    """`tolerance`, raised to the runner's floor (fp16 GPU engines: tracefuse.runtimes.gpu_config)."""
    floor = getattr(runner, "tolerance_floor", None) or {}
    return {**tolerance, **{k: max(float(tolerance.get(k, 0.0)), v) for k, v in floor.items()}}


def load(artifact: str | os.PathLike[str], *, runtime: str | None = None, verify: bool = True,
         threads: int | None = None, trust_unverified: bool = False,
         runtime_options: dict[str, Any] | None = None) -> Runner:
    """Open an artifact on a runtime; hashes are verified unless `verify=False`. Returns an opened Runner.

    A graph with no manifest loads only as tracefuse.trust allows (ONNX: with a warning; formats whose
    loading executes code: only with `trust_unverified=True`). See docs/security.md.
    """
    art = load_artifact(artifact, verify=verify, trust_unverified=trust_unverified)
    return open_runner(art, runtime, threads=threads, options=runtime_options).open()


def run(artifact: str | os.PathLike[str], inputs: str | os.PathLike[str], output: str | os.PathLike[str], *,
        runtime: str | None = None, threads: int | None = None, verify: bool = True,
        trust_unverified: bool = False, runtime_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Run an artifact on the arrays of an `.npz`, and write the outputs to another `.npz` atomically."""
    feeds = load_npz(inputs)
    with load(artifact, runtime=runtime, threads=threads, verify=verify, trust_unverified=trust_unverified,
              runtime_options=runtime_options) as runner:
        result = runner.infer(feeds)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp.npz")
    np.savez(tmp, **result)
    os.replace(tmp, output)
    return result


def inspect(artifact: str | os.PathLike[str], *, trust_unverified: bool = False) -> dict[str, Any]:
    """The manifest, graph summary (opset, op histogram, parameters) and file sizes of an artifact."""
    from tracefuse.graphs.onnx_file import load_onnx, summary

    art = load_artifact(artifact, trust_unverified=trust_unverified)
    info: dict[str, Any] = {"path": str(art.path), "manifest": art.manifest.to_dict()}
    info["size_bytes"] = sum(int(f.get("size", 0)) for f in art.manifest.files.values())
    if art.manifest.format == "onnx":
        info["graph"] = summary(load_onnx(art.graph_path))
    else:
        from tracefuse.runtimes.format_summary import format_summary

        info["format_summary"] = format_summary(art)
    return info

from tracefuse.api_passes import optimize, quantize  # noqa: E402,F401  (the optimization stage; see api_passes)
