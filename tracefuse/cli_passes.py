"""`tracefuse optimize` and `tracefuse quantize`: plain functions registered in cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tracefuse.cli import (
    InputsOpt,
    JsonOpt,
    TextFileOpt,
    TextOpt,
    ThreadsOpt,
    _errors,
    _finish_report,
    _progress,
    _texts,
    err,
    out,
)

# The registered pass names, for --passes' help; listed here so `--help` imports no pass module
# (tests/passes/test_api_passes.py checks the list against the registry).
PASS_NAMES = ("cleanup", "fuse-attention", "fuse-norm", "fuse-gelu", "fuse-norm-cpu", "fuse-gelu-cpu", "fuse-matmul",
              "fuse-layer-norm", "fuse-attention-standard", "fuse-norm-standard", "fp16")

ArtifactArg = Annotated[Path, typer.Argument(help="The ONNX artifact directory to read (it is not modified).")]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="The new artifact directory to write.")]
NoValidateOpt = Annotated[bool, typer.Option("--no-validate", help="Skip validation against PyTorch.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")]


def _print_passes(entries: list[dict[str, Any]], explain: bool) -> None:
    from rich.table import Table

    table = Table(title="passes")
    for col in ("pass", "seconds", "nodes", "result", "check"):
        table.add_column(col)
    for e in entries:
        stats = e.get("stats", {})
        nodes = e.get("nodes", {})
        result = stats.get("report") or (
            f"{stats['mode']}: {stats['quantized_nodes']}/{stats['candidates']} nodes, cosine {stats['cosine']:.6f}"
            + (f", top-1 {stats['top1']:.4f}" if "top1" in stats else "")
            if "mode" in stats else f"{stats.get('nodes_before', '?')} → {stats.get('nodes_after', '?')} nodes")
        check = e.get("check")
        table.add_row(e["name"], f"{e.get('seconds', 0):.2f}",
                      f"{nodes.get('before', '')} → {nodes.get('after', '')}" if nodes else "-", result,
                      "-" if check is None else ("ok" if check["passed"] else "[red]FAIL[/red]")
                      + f" (max abs {check['max_abs']:.2e})")
    out.print(table)
    for e in entries:
        for node in e.get("stats", {}).get("excluded", []):
            out.print(f"kept in float: {node['node']} (cosine drop alone {node['cosine_drop_alone']:.3g})")
        if explain:
            for r in e.get("stats", {}).get("explain", []):
                out.print(f"[yellow]{e['name']}[/yellow] not fused at {r['op']} '{r['node']}' "
                          f"(stage {r['stage']}, rule {r['rule']}, {r['matched_nodes']} nodes matched): {r['reason']}",
                          highlight=False)


def optimize(
    artifact: ArtifactArg,
    output: OutputOpt,
    preset: Annotated[str | None, typer.Option("--preset", help="cpu, cuda, tensorrt or standard.")] = None,
    passes: Annotated[str | None, typer.Option("--passes", help="Comma-separated pass names, in order: "
                                               f"{', '.join(PASS_NAMES)} (docs/passes.md).")] = None,
    target: Annotated[str, typer.Option("--target", help="With --passes: ort (ONNX Runtime com.microsoft ops) or "
                                        "standard (fuse-attention / fuse-norm write the opset-23 Attention / "
                                        "RMSNormalization ops; the graph moves to opset 23 when needed).")] = "ort",
    check: Annotated[bool, typer.Option("--check", help="Run ONNX Runtime after every pass and name the first "
                                        "pass that moves the outputs past the tolerance.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each unfused block did not match.")] = False,
    no_validate: NoValidateOpt = False,
    overwrite: OverwriteOpt = False,
    inputs: InputsOpt = None,
    text: TextOpt = None,
    text_file: TextFileOpt = None,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Rewrite ARTIFACT's graph with a preset or a list of passes into a new artifact, then validate it.

    Example: tracefuse optimize out/bert -o out/bert-cpu --preset cpu --check --explain
    """
    from tracefuse.api_passes import optimize as run
    from tracefuse.passes.base import PassCheckFailed

    with _errors():
        texts = _texts(text, text_file)
        try:
            with _progress() as progress:
                result = run(artifact, output, preset=preset, passes=passes.split(",") if passes else None,
                             target=target, check=check, explain=explain, validate=not no_validate, overwrite=overwrite,
                             inputs=inputs, texts=texts, threads=threads, progress=progress)
        except PassCheckFailed as exc:
            _print_passes(exc.steps, explain)
            raise
        _print_passes(result.passes, explain)
        out.print(f"wrote {result.artifact.path}")
        if result.report is not None:
            _finish_report(result.report, json_path)


def _is_tflite(artifact: Path) -> bool:
    from tracefuse.artifact import read_manifest

    return (artifact / "manifest.json").is_file() and read_manifest(artifact).format == "tflite"


def quantize(
    artifact: ArtifactArg,
    output: OutputOpt,
    mode: Annotated[str, typer.Option("--mode", help="dynamic (int8), static (int8 QDQ, calibrated) or int4 "
                                      "(weight-only MatMulNBits); TFLite artifacts: dynamic, weight-only, fp16, "
                                      "static or static-a16 (see quantize-tflite).")] = "dynamic",
    calibration: Annotated[Path | None, typer.Option("--calibration", help="An .npz of named inputs to calibrate "
                                                     "static mode on (default: generated inputs).")] = None,
    method: Annotated[str, typer.Option("--calibration-method", help="minmax, percentile or entropy.")] = "minmax",
    per_channel: Annotated[bool, typer.Option("--per-channel", help="Per-channel weight scales.")] = False,
    block_size: Annotated[int, typer.Option("--block-size", help="int4 block size.")] = 32,
    target_cosine: Annotated[float | None, typer.Option(
        "--target-cosine", min=0.0, max=1.0, help="Keep the most sensitive nodes in float until the worst cosine "
        "to the float graph on the validation inputs reaches this.")] = None,
    target_top1: Annotated[float | None, typer.Option(
        "--target-top1", min=0.0, max=1.0, help="Instead of --target-cosine: keep the most sensitive nodes in float "
        "until the worst top-1 agreement of the logits outputs with the float graph reaches this (e.g. 0.99); "
        "validation then judges logits by top-1 and other outputs by cosine >= 0.99.")] = None,
    no_validate: NoValidateOpt = False,
    overwrite: OverwriteOpt = False,
    inputs: InputsOpt = None,
    text: TextOpt = None,
    text_file: TextFileOpt = None,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Quantize ARTIFACT into a new artifact, then validate it against PyTorch by cosine similarity.

    Example: tracefuse quantize out/minilm -o out/minilm-int8 --mode dynamic --target-cosine 0.99
    """
    from tracefuse.api_passes import quantize as run

    with _errors():
        texts = _texts(text, text_file)
        if _is_tflite(artifact):  # edge quantization with ai-edge-quantizer recipes (tracefuse.cli_tflite)
            from tracefuse.cli_tflite import run_edge_quantize

            return run_edge_quantize(artifact, output, mode=mode, min_cosine=target_cosine or 0.99,
                                     validate=not no_validate, overwrite=overwrite, threads=threads,
                                     json_path=json_path, calibration=calibration, inputs=inputs, texts=texts)
        with _progress() as progress:
            result = run(artifact, output, mode=mode, calibration=calibration, calibration_method=method,
                         per_channel=per_channel, block_size=block_size, target_cosine=target_cosine,
                         target_top1=target_top1, validate=not no_validate, overwrite=overwrite, inputs=inputs,
                         texts=texts, threads=threads, progress=progress)
        _print_passes(result.passes, False)
        stats = result.passes[0]["stats"]
        if not stats["target_met"]:
            worst = f"top-1 {stats['top1']:.4f}" if target_top1 is not None else f"cosine {stats['cosine']:.6f}"
            err.print(f"[yellow]note:[/yellow] the target {target_top1 if target_top1 is not None else target_cosine} "
                      f"was not met (worst {worst})")
        out.print(f"wrote {result.artifact.path}")
        if result.report is not None:
            _finish_report(result.report, json_path)


def export_chain(model: str, output: Path, *, optimize: str | None, quantize: str | None,
                 export_options: dict[str, Any], validate: bool, overwrite: bool, inputs: Path | None,
                 texts: list[str] | None, threads: int | None, json_path: Path | None) -> None:
    """`tracefuse export ... --optimize PRESET --quantize MODE`: run the chain, print each step, finish."""
    from tracefuse.api_chain import export_chain as run

    with _progress() as progress:
        result = run(model, output, optimize=optimize, quantize=quantize, export_options=export_options,
                     validate=validate, overwrite=overwrite, inputs=inputs, texts=texts, threads=threads,
                     progress=progress)
    for step in result.steps:
        v = step.get("validation")
        verdict = ("not validated" if v is None else
                   "validation passed" if v["passed"] else "[red]validation FAILED[/red]")
        out.print(f"step {step['step']} ({step['seconds']:.1f}s): {verdict}")
    if result.artifact is not None:
        _print_passes(list(result.artifact.manifest.passes), False)
        out.print(f"wrote {result.artifact.path}")
    else:
        err.print(f"[red]step {result.steps[-1]['step']} failed validation: the chain stopped, nothing was written "
                  f"at {output}[/red]")
    if result.report is not None:
        _finish_report(result.report, json_path)
