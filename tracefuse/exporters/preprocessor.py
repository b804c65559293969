"""Edge bundle: the source's tokenizer / image processor / feature extractor, saved into the artifact.

An app that runs the graph also needs what turns text, images or audio into its inputs. With
`--with-preprocessor` the preprocessor is loaded from the checkpoint with Transformers' Auto classes
(AutoProcessor first, then AutoTokenizer, AutoImageProcessor, AutoFeatureExtractor), written with its own
`save_pretrained` into `preprocessor/` of the artifact, and the checkpoint's original vocabulary files that
`save_pretrained` did not write (vocab.txt, merges.txt, sentencepiece models…, useful to mobile tokenizers)
are copied beside them. The manifest lists the files and their kind under `preprocessor`; like every
artifact file they are hashed in `files`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracefuse.errors import SourceError

logger = logging.getLogger(__name__)

PREPROCESSOR_DIR = "preprocessor"
# Files a checkpoint's preprocessor is made of; their presence is what --with-preprocessor looks for.
KNOWN_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "source.spm",
    "target.spm", "preprocessor_config.json", "processor_config.json", "chat_template.jinja",
    "chat_template.json", "video_preprocessor_config.json",
)
_AUTO_CLASSES = ("AutoProcessor", "AutoTokenizer", "AutoImageProcessor", "AutoFeatureExtractor")


@dataclass(frozen=True)
class Preprocessor:
    """A loaded preprocessor: its kind (processor, tokenizer, image-processor, feature-extractor), the
    Transformers object, and the checkpoint directory it came from."""

    kind: str
    obj: Any
    checkpoint: Path


def _kind(obj: Any) -> str:
    from transformers import PreTrainedTokenizerBase, ProcessorMixin
    from transformers.feature_extraction_utils import FeatureExtractionMixin
    from transformers.image_processing_base import ImageProcessingMixin

    if isinstance(obj, ProcessorMixin):
        return "processor"
    if isinstance(obj, PreTrainedTokenizerBase):
        return "tokenizer"
    if isinstance(obj, ImageProcessingMixin):
        return "image-processor"
    if isinstance(obj, FeatureExtractionMixin):
        return "feature-extractor"
    return type(obj).__name__


def _no_preprocessor(loaded: Any, found: str) -> SourceError:
    return SourceError(
        f"--with-preprocessor bundles the model's tokenizer, image processor or feature extractor, and the "
        f"source {loaded.source.get('id')} has none",
        found=found,
        fix="export a checkpoint directory (or builtin:/hub model) that ships its preprocessor files "
        f"({', '.join(KNOWN_FILES[:6])}, preprocessor_config.json…), or drop --with-preprocessor",
    )


def load_preprocessor(loaded: Any) -> Preprocessor:
    """The preprocessor of a loaded model's checkpoint; raises SourceError (expected / found / fix) when the
    source has no checkpoint directory (tiny:, module:factory) or the directory holds no preprocessor."""
    checkpoint = loaded.checkpoint_dir
    if checkpoint is None:
        raise _no_preprocessor(loaded, f"a {loaded.source.get('kind')} source, which has no checkpoint directory")
    present = [name for name in KNOWN_FILES if (Path(checkpoint) / name).is_file()]
    if not present:
        listing = ", ".join(sorted(p.name for p in Path(checkpoint).iterdir())[:10])
        raise _no_preprocessor(loaded, f"none of the preprocessor files in {checkpoint} (it has: {listing})")
    import transformers

    errors = []
    for name in _AUTO_CLASSES:
        try:
            obj = getattr(transformers, name).from_pretrained(checkpoint, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - each Auto class raises its own errors; try the next
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:160]}")
            continue
        logger.info("preprocessor of %s: %s via %s", checkpoint, type(obj).__name__, name)
        return Preprocessor(_kind(obj), obj, Path(checkpoint))
    raise _no_preprocessor(loaded, f"files {', '.join(present)} that no Auto class loads ({'; '.join(errors)})")


def save_preprocessor(pre: Preprocessor, staging: Path) -> dict[str, Any]:
    """Write the preprocessor into `staging/preprocessor/`; returns the manifest's `preprocessor` entry
    (kind, class, directory, files relative to the artifact root)."""
    dest = staging / PREPROCESSOR_DIR
    dest.mkdir(parents=True, exist_ok=True)
    pre.obj.save_pretrained(dest)
    copied = []
    for name in KNOWN_FILES:
        src = pre.checkpoint / name
        if src.is_file() and not (dest / name).exists():
            shutil.copy2(src, dest / name)
            copied.append(name)
    files = sorted(p.relative_to(staging).as_posix() for p in dest.rglob("*") if p.is_file())
    return {"kind": pre.kind, "class": type(pre.obj).__name__, "dir": PREPROCESSOR_DIR, "files": files,
            "copied_from_checkpoint": copied}
