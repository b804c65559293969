"""The `quantize-tflite` command: edge quantization of a TFLite artifact (see tracefuse.api_tflite).

`tracefuse quantize` routes TFLite artifacts here too (run_edge_quantize), so one command quantizes
every format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    out,
)

MODES_HELP = ("dynamic (int8 weights, dynamic activations), weight-only (int8 weights, float compute), fp16 "
              "(float16 weights), static (int8 activations) or static-a16 (int16 activations); static modes "
              "calibrate on --calibration, --calibration-text-file or generated inputs.")


def run_edge_quantize(artifact: Path, output: Path, *, mode: str, min_cosine: float, validate: bool, overwrite: bool,
                      threads: int | None, json_path: Path | None, calibration: Path | None = None,
                      calibration_texts: list[str] | None = None, inputs: Path | None = None,
                      texts: list[str] | None = None) -> None:
    """Quantize a TFLite artifact, print the size change and quality, and finish with the validation table."""
    from tracefuse.api_tflite import quantize_tflite as run

    with _progress() as progress:
        progress(f"quantizing {artifact} ({mode})")
        result = run(artifact, output, mode=mode, min_cosine=min_cosine, validate=validate, overwrite=overwrite,
                     threads=threads, calibration=calibration, calibration_texts=calibration_texts,
                     inputs=inputs, texts=texts)
    stats = result.entry["stats"]
    out.print(f"wrote {result.artifact.path}: {stats['size_before'] / 1e6:.1f} MB -> "
              f"{stats['size_after'] / 1e6:.1f} MB ({stats['size_ratio']:.0%})"
              + (f", calibrated on {result.entry['calibration']}" if "calibration" in result.entry else ""))
    if result.report is not None:
        q = result.report["quality"]
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        out.print(f"worst cosine {fmt(q['min_cosine'], '.5f')} · SQNR {fmt(q['min_sqnr_db'], '.1f')} dB · "
                  f"top-1 {fmt(q['min_top1'], '.3f')}")
        _finish_report(result.report, json_path)


def quantize_tflite(
    artifact: Annotated[Path, typer.Argument(help="A TFLite artifact directory (tracefuse export --format tflite).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The new artifact directory to write.")],
    mode: Annotated[str, typer.Option("--mode", help=MODES_HELP)] = "dynamic",
    min_cosine: Annotated[float, typer.Option("--min-cosine", min=0.0, max=1.0, help="Pass when every output's "
                                              "cosine to PyTorch is at least this.")] = 0.99,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Static modes: an .npz of named input "
                                                     "rows to calibrate on (axis 0: samples; other axes are cut "
                                                     "or zero-padded to each signature).")] = None,
    calibration_text_file: Annotated[Path | None, typer.Option(
        "--calibration-text-file", help="Static modes: sentences (one a line) to tokenize and calibrate on, with "
        "the bundled preprocessor or the source's tokenizer.")] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip validation against PyTorch.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")] = False,
    inputs: InputsOpt = None,
    text: TextOpt = None,
    text_file: TextFileOpt = None,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Quantize a TFLite ARTIFACT with ai-edge-quantizer, then validate it on LiteRT by cosine to PyTorch.

    Example: tracefuse quantize-tflite out/minilm-tfl -o out/minilm-int8 --mode dynamic
    """
    with _errors():
        run_edge_quantize(artifact, output, mode=mode, min_cosine=min_cosine, validate=not no_validate,
                          overwrite=overwrite, threads=threads, json_path=json_path, calibration=calibration,
                          calibration_texts=_texts(None, calibration_text_file), inputs=inputs,
                          texts=_texts(text, text_file))
