"""The `tracefuse` command line. Exit codes: 0 pass, 1 numerical mismatch, 2 usage, input or environment error."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tracefuse import __version__
from tracefuse.errors import TracefuseError

app = typer.Typer(
    name="tracefuse",
    help="Export PyTorch / Transformers models to ONNX, run them on ONNX Runtime, and prove the numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)
# Outside a terminal (CI logs) keep long paths and messages on one line.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
logger = logging.getLogger("tracefuse")


def _version(value: bool) -> None:
    if value:
        out.print(f"tracefuse {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step, and tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """tracefuse: export, validate, run and inspect model artifacts."""
    # Other libraries' warnings (torch, torchao, transformers) are noise to a CLI user; tracefuse's own show.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("tracefuse").setLevel(logging.WARNING)
        _silence_libraries()


def _silence_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("torch", "torch.onnx", "transformers", "onnxscript", "onnx_ir",
                 "torch.utils._pytree", "torchao", "litert_torch", "absl", "jax"):  # the last three: tflite extra
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


@contextmanager
def _errors() -> Iterator[None]:
    """Turn a TracefuseError into a clear message and exit code 2."""
    try:
        yield
    except TracefuseError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, markup=True)
        if logging.getLogger().level <= logging.DEBUG:
            err.print_exception()
        raise typer.Exit(exc.exit_code) from None


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    with err.status("starting…") as status:
        def update(message: str) -> None:
            status.update(escape(f"{message}…"))
            logger.info(message)

        yield update


def _texts(text: list[str] | None, text_file: Path | None) -> list[str] | None:
    lines = list(text or [])
    if text_file is not None:
        if not text_file.is_file():
            raise TracefuseError(f"text file {text_file} does not exist", fix="give a file with one sentence a line")
        lines += [line.strip() for line in text_file.read_text().splitlines() if line.strip()]
    return lines or None


def _finish_report(report: dict[str, Any], json_path: Path | None) -> None:
    from tracefuse.validation.report import failures, render_table, write_json

    out.print(render_table(report))
    if json_path is not None:
        write_json(report, json_path)
        out.print(f"report written to {escape(str(json_path))}")
    for note in report.get("notes", []):
        err.print(f"[yellow]note:[/yellow] {escape(str(note))}")
    if not report["passed"]:
        err.print("[bold red]validation failed:[/bold red]")
        for line in failures(report):
            err.print(f"  {line}", highlight=False, markup=False)
        raise typer.Exit(1)
    out.print("[bold green]validation passed[/bold green]")


TextOpt = Annotated[list[str] | None, typer.Option("--text", help="A sentence to tokenize and validate on "
                                                    "(repeatable; needs the model's tokenizer).")]
TextFileOpt = Annotated[Path | None, typer.Option("--text-file", help="A file of sentences, one a line, to "
                                                   "tokenize and validate on.")]
InputsOpt = Annotated[Path | None, typer.Option("--inputs", help="An .npz of named input arrays to validate on, "
                                                 "besides the generated inputs.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads.")]
TrustOpt = Annotated[bool, typer.Option("--trust-unverified", help="Load a graph that has no manifest even "
                                     "when its format can execute code (TorchScript, pt2); see docs/security.md.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the validation report as JSON here.")]


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="A checkpoint directory, a cached hub id, tiny:<model_type>, "
                                         "builtin:all-MiniLM-L6-v2, or module.path:factory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The artifact directory to write.")],
    format: Annotated[str, typer.Option("--format", help="Graph format: onnx, torchscript, pt2 (--aot), "
                                                   "tflite (--shapes).")] = "onnx",
    task: Annotated[str | None, typer.Option("--task", help="Task; inferred from config.architectures "
                                              "when not given.")] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 18).")] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="dynamo (default), torchscript, or transformers.")]
    = "dynamo",
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip validation against PyTorch.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")] = False,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help="Refuse to export when the model needs more "
                                                   "memory than this (e.g. 8G); default: what is available.")] = None,
    inputs: InputsOpt = None,
    text: TextOpt = None,
    text_file: TextFileOpt = None,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
    optimize: Annotated[str | None, typer.Option("--optimize", help="onnx only: then optimize with this preset "
                                                 "(cpu, cuda, tensorrt, standard); only the final artifact is "
                                                 "kept, each step is validated.")] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="onnx only: then quantize in this mode "
                                                 "(dynamic, static, int4), after --optimize when given.")] = None,
    aot: Annotated[bool, typer.Option("--aot", help="pt2 only: compile with AOTInductor into a native "
                                      "package (needs a C++ compiler; slow).")] = False,
    shapes: Annotated[str | None, typer.Option("--shapes", help="tflite only: fixed-shape signatures, one size "
                                               "per dynamic axis, e.g. 1x128,4x128 (default: the validation "
                                               "shapes); each is validated.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decoder-only models: export one plain graph "
                                           "(input_ids, attention_mask -> logits) without past key/values; "
                                           "the manifest records use_cache=false.")] = False,
    with_preprocessor: Annotated[bool, typer.Option("--with-preprocessor", help="Edge bundle: copy the model's "
                                                    "tokenizer / image processor / feature extractor files into "
                                                    "preprocessor/ of the artifact (hashed, listed in the "
                                                    "manifest).")] = False,
    fixed_axes: Annotated[str | None, typer.Option("--fixed-axes", help="Comma-separated dynamic axes to fix at "
                                                   "their trace size (e.g. samples, or '*' for every axis but "
                                                   "batch): for a model that torch.export specializes on an "
                                                   "axis (it says it 'inferred a static shape').")] = None,
) -> None:
    """Export MODEL to an artifact directory, then validate it on ONNX Runtime CPU against PyTorch.

    Example: tracefuse export tiny:bert -o out/bert
    """
    from tracefuse import api

    with _errors():
        from tracefuse.resources import parse_size

        texts = _texts(text, text_file)
        axes = tuple(a.strip() for a in (fixed_axes or "").split(",") if a.strip())
        if optimize or quantize:
            from tracefuse.cli_passes import export_chain

            return export_chain(model, output, optimize=optimize, quantize=quantize, validate=not no_validate,
                                export_options={"format": format, "task": task, "opset": opset, "exporter": exporter,
                                                "max_memory": parse_size(max_memory) if max_memory else None,
                                                "use_cache": not no_cache, "with_preprocessor": with_preprocessor,
                                                **({"fixed_axes": axes} if axes else {})},
                                overwrite=overwrite, inputs=inputs, texts=texts, threads=threads, json_path=json_path)
        with _progress() as progress:
            result = api.export(model, output, format=format, task=task, opset=opset, exporter=exporter,
                                max_memory=parse_size(max_memory) if max_memory else None,
                                validate=not no_validate, overwrite=overwrite, inputs=inputs, texts=texts,
                                threads=threads, progress=progress, use_cache=not no_cache,
                                with_preprocessor=with_preprocessor, fixed_axes=axes,
                                options={k: v for k, v in {"aot": aot, "shapes": shapes}.items() if v} or None)
        out.print(f"wrote {escape(str(result.artifact.path))} ({result.artifact.manifest.format}, task "
                  f"{result.artifact.manifest.task})")
        if result.report is not None:
            _finish_report(result.report, json_path)


@app.command()
def validate(
    artifact: Annotated[Path, typer.Argument(help="The artifact directory.")],
    reference: Annotated[str | None, typer.Option("--reference", help="Model to compare against; defaults to "
                                                   "the source recorded in the manifest.")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="Runtime to validate on; the artifact "
                                                 "format's default (onnx: ort-cpu) when not given.")] = None,
    inputs: InputsOpt = None,
    text: TextOpt = None,
    text_file: TextFileOpt = None,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
    runtime_option: Annotated[list[str] | None, typer.Option("--runtime-option", "-R", help="A GPU runtime option "
                              "KEY=VALUE (repeatable), e.g. allow_fallback=1, fp16=1; see docs/gpu.md.")] = None,
) -> None:
    """Run ARTIFACT and the PyTorch reference on the same inputs and compare every output.

    Exit 0 when every output is within tolerance, 1 when one is not (it is named), 2 on bad input.
    Example: tracefuse validate out/bert --json report.json
    """
    from tracefuse import api
    from tracefuse.cli_gpu import parse_runtime_options

    with _errors():
        texts = _texts(text, text_file)
        with _progress() as progress:
            report = api.validate(artifact, reference=reference, runtime=runtime, inputs=inputs, texts=texts,
                                  threads=threads, progress=progress,
                                  runtime_options=parse_runtime_options(runtime_option))
        _finish_report(report, json_path)


@app.command()
def run(
    artifact: Annotated[Path, typer.Argument(help="The artifact directory.")],
    inputs: Annotated[Path, typer.Option("--inputs", help="An .npz with one array per graph input.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the outputs (.npz).")],
    runtime: Annotated[str | None, typer.Option("--runtime", help="Runtime; the artifact format's default "
                                                 "(onnx: ort-cpu) when not given.")] = None,
    threads: ThreadsOpt = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the sha256 check of the artifact's files "
                                            "(faster for large models; path checks still run).")] = False,
    trust_unverified: TrustOpt = False,
) -> None:
    """Run ARTIFACT on the arrays in an .npz and write its outputs to another .npz.

    Example: tracefuse run out/bert --inputs feeds.npz --output result.npz
    """
    from tracefuse import api

    with _errors():
        result = api.run(artifact, inputs, output, runtime=runtime, threads=threads, verify=not no_verify,
                         trust_unverified=trust_unverified)
        for name, value in result.items():
            out.print(f"{name}: {value.dtype} {list(value.shape)}")
        out.print(f"outputs written to {escape(str(output))}")


@app.command()
def inspect(
    artifact: Annotated[Path, typer.Argument(help="The artifact directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    trust_unverified: TrustOpt = False,
) -> None:
    """Show an artifact's manifest, inputs/outputs, op histogram and size.

    Example: tracefuse inspect out/bert --json
    """
    from rich.table import Table

    from tracefuse import api

    with _errors():
        info = api.inspect(artifact, trust_unverified=trust_unverified)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    m = info["manifest"]
    out.print(f"[bold]{escape(info['path'])}[/bold]: {m['format']} · task {m['task']} · "
              f"source {escape(str(m['source'].get('id')))} · "
              f"{info['size_bytes'] / 1e6:.2f} MB")
    io = Table(title="inputs and outputs")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in m[kind]:
            io.add_row(kind[:-1], t["name"], t["dtype"], escape("[" + ", ".join(map(str, t["shape"])) + "]"))
    out.print(io)
    graph = info.get("graph")
    if graph:
        out.print(f"opset {graph['opset']} · IR {graph['ir_version']} · {graph['nodes']} nodes · "
                  f"{graph['parameters']:,} parameters · exporter {m['export'].get('exporter')}")
        ops = Table(title="op histogram")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, count in graph["ops"].items():
            ops.add_row(op, str(count))
        out.print(ops)
    fs = info.get("format_summary")
    if fs:
        out.print(f"{fs['graph_file']}: {fs['graph_bytes'] / 1e6:.2f} MB"
                  + (f" · {fs['nodes']} nodes" if "nodes" in fs else "")
                  + (f" · {fs['parameters']:,} parameters" if "parameters" in fs else "")
                  + (f" · {fs['compiled']}" if "compiled" in fs else ""))
        if fs.get("ops"):
            out.print("ops: " + ", ".join(f"{op} {n}" for op, n in fs["ops"].items()), highlight=False)
    pre = m.get("preprocessor")
    if pre:
        files = pre.get("files", [])
        out.print(f"preprocessor: {pre.get('kind')} ({escape(str(pre.get('class')))}), {len(files)} files",
                  highlight=False)
        for f in files:
            entry = m["files"].get(f, {})
            out.print(f"  {escape(f)}  {entry.get('size', 0):,} B  sha256 {str(entry.get('sha256'))[:16]}",
                      highlight=False)
    for runtime, hints in (m.get("runtime_hints") or {}).items():
        out.print(f"runtime hints for {escape(runtime)}: "
                  + ", ".join(f"{k} {escape(str(v))}" for k, v in hints.items()), highlight=False)
    if m.get("validation"):
        v = m["validation"]
        out.print(f"last validation: {'passed' if v['passed'] else 'FAILED'} on {v['runtime']} "
                  f"({', '.join(v['cases'])})")


from tracefuse import cli_jobs  # noqa: E402  (CI jobs commands; imported last, it uses the helpers above)

app.command("ci")(cli_jobs.ci)

from tracefuse import cli_passes  # noqa: E402  (optimize / quantize commands; they use the helpers above)

app.command("optimize")(cli_passes.optimize)
app.command("quantize")(cli_passes.quantize)

from tracefuse import cli_generate  # noqa: E402  (generate command)

app.command("generate")(cli_generate.generate)

from tracefuse import cli_tflite  # noqa: E402  (quantize-tflite command)

app.command("quantize-tflite")(cli_tflite.quantize_tflite)

from tracefuse import cli_coverage  # noqa: E402  (coverage command)

app.command("coverage")(cli_coverage.coverage)

from tracefuse import cli_gpu  # noqa: E402  (compile and bench commands: GPU runtimes)

app.command("compile")(cli_gpu.compile_cmd)
app.command("bench")(cli_gpu.bench)

from tracefuse import cli_debug  # noqa: E402  (debug command: the divergence finder)

app.command("debug")(cli_debug.debug)


def entrypoint() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    entrypoint()
