"""Helpers shared by tests: a tiny saved checkpoint, and re-hashing an artifact file after editing it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def save_tiny_checkpoint(path: Path, seed: int = 7) -> Path:
    """Save a tiny random BertModel with save_pretrained (config.json + model.safetensors) at `path`."""
    import torch
    from transformers import BertModel

    from tracefuse.exporters.tiny import tiny_config

    torch.manual_seed(seed)
    BertModel(tiny_config("bert")).eval().save_pretrained(path)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path


def rehash(artifact: Path, name: str) -> None:
    """Record the current sha256 and size of `name` in the artifact's manifest, as if it had been written so."""
    data = (artifact / name).read_bytes()
    manifest_path = artifact / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=2))
