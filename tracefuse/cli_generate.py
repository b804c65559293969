"""`tracefuse generate`: greedy generation with the KV cache from a decoder artifact (registered in cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tracefuse.cli import ThreadsOpt, _errors, out
from tracefuse.errors import TracefuseError


def _parse_ids(rows: list[str]) -> list[list[int]]:
    parsed = []
    for row in rows:
        try:
            ids = [int(tok) for tok in row.replace(" ", "").split(",") if tok != ""]
        except ValueError:
            raise TracefuseError("--prompt-ids must be comma-separated integers", found=repr(row)[:80],
                                 fix="give e.g. --prompt-ids 1,2,3") from None
        if not ids:
            raise TracefuseError("--prompt-ids is empty", fix="give at least one token id, e.g. --prompt-ids 1,2,3")
        parsed.append(ids)
    if len({len(r) for r in parsed}) > 1:
        raise TracefuseError("every --prompt-ids row must have the same length",
                             found=", ".join(str(len(r)) for r in parsed), fix="pad the prompts yourself")
    return parsed


def generate(
    artifact: Annotated[Path, typer.Argument(help="A decoder artifact exported with --task text-generation.")],
    prompt_ids: Annotated[list[str], typer.Option("--prompt-ids", help="Comma-separated prompt token ids; "
                                                  "repeat for a batch of equal-length prompts.")],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate.")] = 32,
    eos_id: Annotated[list[int] | None, typer.Option("--eos-id", help="Stop a row at this token id "
                                                     "(repeatable).")] = None,
    pad_id: Annotated[int | None, typer.Option("--pad-id", help="Token that fills finished rows "
                                               "(the first --eos-id when not given).")] = None,
    decoder_start_id: Annotated[int | None, typer.Option("--decoder-start-id", help="Encoder-decoders: the "
                                                         "decoder's first token, when the manifest has none.")]
    = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="Runtime; the artifact format's default "
                                                "(onnx: ort-cpu) when not given.")] = None,
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tokens as JSON.")] = False,
) -> None:
    """Greedy-decode MAX_NEW_TOKENS tokens after the prompt with the artifact's KV cache; print the token ids.

    For an encoder-decoder (t5, bart) the prompt is the encoder's input and the decoder's new tokens are
    printed. End-of-sequence and pad ids default to those recorded from the model at export.

    Example: tracefuse generate out/gpt2 --prompt-ids 1,2,3 --max-new-tokens 32
    """
    from tracefuse import api

    with _errors():
        prompts = _parse_ids(prompt_ids)
        with api.load(artifact, runtime=runtime, threads=threads) as runner:
            tokens = runner.generate(prompts, max_new_tokens, eos_token_id=eos_id or None, pad_token_id=pad_id,
                                     decoder_start_token_id=decoder_start_id)
            seq2seq = "encoder" in runner.artifact.manifest.export
    # A decoder-only artifact continues the prompt; an encoder-decoder's tokens start with its start token.
    new = [row[1 if seq2seq else len(prompts[0]):] for row in tokens.tolist()]
    if as_json:
        sys.stdout.write(json.dumps({"prompt_ids": prompts, "new_ids": new, "ids": tokens.tolist()}) + "\n")
        return
    for row in new:
        out.print(",".join(map(str, row)), highlight=False)
