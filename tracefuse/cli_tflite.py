"""The `quantize-tflite` command: edge quantization of a TFLite artifact (see tracefuse.api_tflite)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracefuse.cli import JsonOpt, ThreadsOpt, _errors, _finish_report, _progress, out


def quantize_tflite(
    artifact: Annotated[Path, typer.Argument(help="A TFLite artifact directory (tracefuse export --format tflite).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The new artifact directory to write.")],
    mode: Annotated[str, typer.Option("--mode", help="dynamic (int8 weights, dynamic activations), weight-only "
                                      "(int8 weights, float compute), static (int8 activations) or static-a16 "
                                      "(int16 activations); static modes calibrate on generated inputs.")]
    = "dynamic",
    min_cosine: Annotated[float, typer.Option("--min-cosine", min=0.0, max=1.0, help="Pass when every output's "
                                              "cosine to PyTorch is at least this.")] = 0.99,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip validation against PyTorch.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")] = False,
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Quantize a TFLite ARTIFACT with ai-edge-quantizer, then validate it on LiteRT by cosine to PyTorch.

    Example: tracefuse quantize-tflite out/minilm-tfl -o out/minilm-int8 --mode dynamic
    """
    from tracefuse.api_tflite import quantize_tflite as run

    with _errors():
        with _progress() as progress:
            progress(f"quantizing {artifact} ({mode})")
            result = run(artifact, output, mode=mode, min_cosine=min_cosine, validate=not no_validate,
                         overwrite=overwrite, threads=threads)
        stats = result.entry["stats"]
        out.print(f"wrote {result.artifact.path}: {stats['size_before'] / 1e6:.1f} MB -> "
                  f"{stats['size_after'] / 1e6:.1f} MB ({stats['size_ratio']:.0%})")
        if result.report is not None:
            _finish_report(result.report, json_path)
