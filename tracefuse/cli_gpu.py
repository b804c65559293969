"""The `compile` and `bench` commands, and `--runtime-option KEY=VALUE` parsing for the GPU runtimes.

See docs/gpu.md. These commands have not run on a GPU in this project yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tracefuse.cli import JsonOpt, ThreadsOpt, _errors, _finish_report, _progress, err, out
from tracefuse.errors import TracefuseError

RUNTIME_OPTION_HELP = ("A GPU runtime option KEY=VALUE (repeatable): allow_fallback=1, fp16=1, "
                       "shapes=batch=1:8:32,sequence=1:128:512, workspace=4G, cache_dir=DIR, device_id=0, "
                       "strongly_typed=0; see docs/gpu.md.")
RuntimeOptionOpt = Annotated[list[str] | None, typer.Option("--runtime-option", "-R", help=RUNTIME_OPTION_HELP)]


def parse_runtime_options(items: list[str] | None) -> dict[str, str] | None:
    """['allow_fallback=1', 'shapes=batch=1:8:32'] -> {'allow_fallback': '1', 'shapes': 'batch=1:8:32'}."""
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TracefuseError("a runtime option must read KEY=VALUE", found=repr(item),
                                 fix="e.g. --runtime-option allow_fallback=1")
        options[key.strip()] = value.strip()
    return options or None


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise TracefuseError(f"{what} must be positive integers separated by commas", found=repr(text),
                             fix=f"e.g. --{what.replace(' ', '-')} 1,8,32")
    return values


def compile_cmd(
    artifact: Annotated[Path, typer.Argument(help="An ONNX artifact directory (best: optimized with --preset "
                                             "tensorrt, and --passes ...,fp16 for fp16).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The engine artifact directory to write.")],
    target: Annotated[str, typer.Option("--target", help="What to compile for: tensorrt.")] = "tensorrt",
    shapes: Annotated[str | None, typer.Option("--shapes", help="Optimization profile per dynamic axis, "
                                               "e.g. batch=1:8:32,sequence=1:128:512 (default: from the "
                                               "artifact's axes).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="TensorRT 10 only: let the builder pick fp16 kernels for an "
                                       "fp32 graph (weakly typed network). Prefer an fp16 graph.")] = False,
    workspace: Annotated[str | None, typer.Option("--workspace", help="Builder workspace limit, e.g. 4G.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Engine and timing cache directory "
                                                   "(default ~/.cache/tracefuse/tensorrt).")] = None,
    device_id: Annotated[int, typer.Option("--device-id", min=0, help="CUDA device index.")] = 0,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip validation against PyTorch.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Build a TensorRT engine from an ONNX ARTIFACT (profiles from its dynamic axes; engine cache), then validate.

    Example: tracefuse compile out/bert-trt-fp16 --target tensorrt -o out/bert-engine
    """
    from tracefuse.api_gpu import compile_artifact

    with _errors():
        options: dict[str, Any] = {"device_id": device_id, "shapes": shapes, "workspace": workspace,
                                   "cache_dir": str(cache_dir) if cache_dir else None}
        if fp16:
            options.update(fp16=True, strongly_typed=False)
        with _progress() as progress:
            result = compile_artifact(artifact, output, target=target, runtime_options=options,
                                      validate=not no_validate, overwrite=overwrite, progress=progress)
        build = result.build
        out.print(f"wrote {escape(str(result.artifact.path))}: TensorRT {build.get('tensorrt')} on "
                  f"{escape(str(build.get('gpu')))}, {build.get('layers', '?')} layers "
                  f"{build.get('precisions', {})}, engine cache {build.get('cache')}")
        for error in build.get("parse_errors", []):
            err.print(f"[yellow]parser:[/yellow] {escape(json.dumps(error))}")
        if result.report is not None:
            _finish_report(result.report, json_path)


def bench(
    artifact: Annotated[Path, typer.Argument(help="The artifact directory (ONNX, or a compiled engine).")],
    runtime: Annotated[list[str], typer.Option("--runtime", help="Runtime to time (repeatable, or comma-"
                                               "separated): ort-cpu, ort-cuda, ort-trt, tensorrt, ...")],
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes, comma-separated.")] = "1,8,32",
    seq_lens: Annotated[str, typer.Option("--seq-lens", help="Sequence lengths, comma-separated.")] = "128,512",
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed calls per shape.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls per shape first.")] = 10,
    no_eager: Annotated[bool, typer.Option("--no-eager", help="Do not time PyTorch eager beside.")] = False,
    eager_fp32: Annotated[bool, typer.Option("--eager-fp32", help="Time PyTorch eager in fp32 on CUDA "
                                             "(default there: fp16 with SDPA).")] = False,
    reference: Annotated[str | None, typer.Option("--reference", help="The model PyTorch eager runs; default: "
                                                  "the source recorded in the manifest.")] = None,
    threads: ThreadsOpt = None,
    runtime_option: RuntimeOptionOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
) -> None:
    """Time ARTIFACT on each runtime and PyTorch eager (each in its own process): p50/p90/p99, throughput, memory.

    Example: tracefuse bench out/bert --runtime tensorrt,ort-cuda --batch-sizes 1,8,32 --seq-lens 128,512
    """
    from tracefuse.api_bench import bench as run_bench
    from tracefuse.validation.bench_stats import render_markdown

    with _errors():
        runtimes = [r.strip() for item in runtime for r in item.split(",") if r.strip()]
        with _progress() as progress:
            result = run_bench(artifact, runtimes, batch_sizes=_ints(batch_sizes, "batch sizes"),
                               seq_lens=_ints(seq_lens, "seq lens"), iters=iters, warmup=warmup, eager=not no_eager,
                               fp16=False if eager_fp32 else None, reference=reference, threads=threads,
                               runtime_options=parse_runtime_options(runtime_option), progress=progress)
        out.print(render_markdown(result), markup=False, highlight=False)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2))
            out.print(f"results written to {escape(str(json_path))}")
        failed = [r for r in result["rows"] if "error" in r]
        if failed:
            err.print(f"[bold red]{len(failed)} of {len(result['rows'])} cells failed[/bold red]")
            raise typer.Exit(2)
