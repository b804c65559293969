"""The export cache: an artifact per key, where the key hashes what decides the exported graph.

The key is sha256 over the model source id, its weights/config hashes, the tracefuse and tool versions,
the format, task, preset and export options. Entries are written by `tracefuse.api.export` (staging
directory + atomic rename) while holding a per-key file lock, so cells running in parallel processes
never see half an artifact and never export the same key twice. Every lookup appends one line to
`log.jsonl` ("export" or "hit"), which is how tests count exporter calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracefuse.artifact import load_artifact, sha256_file
from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth")


def source_identity(source: dict[str, Any]) -> dict[str, Any]:
    """What identifies a model's numbers: id, kind, seed, config and weights hashes (files hashed for a directory)."""
    ident = {k: source[k] for k in ("kind", "id", "seed", "config_sha256", "weights_sha256") if k in source}
    path = source.get("path")
    if path and Path(path).is_dir():
        ident["weights_files"] = {p.name: sha256_file(p) for g in _WEIGHT_GLOBS for p in sorted(Path(path).glob(g))}
    return ident


def cache_key(identity: dict[str, Any], *, fmt: str, task: str | None, preset: str, options: dict[str, Any],
              versions: dict[str, str]) -> str:
    """sha256 hex of everything that decides an exported artifact."""
    blob = json.dumps({"source": identity, "format": fmt, "task": task, "preset": preset, "options": options,
                       "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ExportCache:
    """A directory of cached artifacts keyed by `cache_key`, safe to share between processes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the artifact for `key` lives (it may not exist yet).

        Each key gets its own parent directory, so the staging directories of parallel exports never
        share a folder (staged_artifact cleans stale staging folders beside its destination).
        """
        return self.root / "artifacts" / key / "artifact"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of one key (blocks while another process holds it)."""
        with open(self.root / "locks" / f"{key}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get_or_build(self, key: str, build: Callable[[Path], None], *, cell: str = "") -> tuple[Path, bool]:
        """The artifact for `key`, built by `build(path)` when absent or damaged; returns (path, was_cached)."""
        path = self.path(key)
        with self.lock(key):
            if path.is_dir():
                try:
                    load_artifact(path)
                    self._log("hit", key, cell)
                    return path, True
                except ArtifactError as exc:
                    logger.warning("cached artifact %s is damaged (%s); rebuilding", path, exc.problem)
            start = time.perf_counter()
            build(path)
            self._log("export", key, cell, seconds=round(time.perf_counter() - start, 3))
            return path, False

    def _log(self, event: str, key: str, cell: str, **extra: Any) -> None:
        line = json.dumps({"event": event, "key": key, "cell": cell, "time": time.time(), **extra}) + "\n"
        with open(self.root / LOG_NAME, "a") as fh:  # one short O_APPEND write per line: atomic across processes
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(line)
            fcntl.flock(fh, fcntl.LOCK_UN)

    def events(self) -> list[dict[str, Any]]:
        """Every logged lookup, oldest first."""
        log = self.root / LOG_NAME
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
