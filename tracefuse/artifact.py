"""The artifact: a directory with graph files and `manifest.json`, written atomically, verified on load.

Every stage takes an artifact and returns a new one; nothing is edited in place. A new artifact is
assembled in a staging directory beside its destination and renamed into place only when complete,
so an export that fails or is killed leaves nothing at the output path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAGING_PREFIX = ".tracefuse-staging-"
PID_NAME = ".tracefuse-writer.pid"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, numpy dtype name, and shape.

    A dimension is an int (fixed) or a str (a named dynamic axis such as "batch"). `fill` tells the
    input generator what values make sense: {"kind": "int", "low": 0, "high": 1000} for token ids,
    {"kind": "mask"} for attention masks, {"kind": "normal"} for pixels or features.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    fill: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the manifest."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "fill": dict(self.fill)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """Read the JSON form; raises ArtifactError when a key is missing or of the wrong type."""
        try:
            shape = tuple(d if isinstance(d, int) else str(d) for d in data["shape"])
            return cls(str(data["name"]), str(data["dtype"]), shape, dict(data.get("fill") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                "a tensor entry in the manifest is malformed",
                found=repr(data)[:200],
                fix="re-export the artifact with this version of tracefuse",
            ) from exc


@dataclass(frozen=True)
class Manifest:
    """What an artifact is: format, source, task, inputs/outputs, tolerances, files and their hashes."""

    format: str
    graph: str
    source: dict[str, Any]
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    validation_shapes: tuple[dict[str, int], ...] = ()
    tolerance: dict[str, float] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    passes: tuple[dict[str, Any], ...] = ()
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to manifest.json."""
        data = dataclasses.asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        data["validation_shapes"] = [dict(s) for s in self.validation_shapes]
        data["passes"] = [dict(p) for p in self.passes]
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest.json") -> Manifest:
        """Parse and check a manifest; raises ArtifactError naming what is wrong."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} is not a JSON object", found=type(data).__name__, fix="re-export")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise ArtifactError(f"{where} has no integer format_version", found=repr(version)[:80], fix="re-export")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"the artifact was written by manifest format version {version}; "
                f"this tracefuse reads up to {FORMAT_VERSION}",
                fix="upgrade tracefuse",
            )
        required = {"format": str, "graph": str, "source": dict, "task": str, "inputs": list, "outputs": list}
        for key, kind in required.items():
            if not isinstance(data.get(key), kind):
                raise ArtifactError(
                    f"{where}: key '{key}' must be a {kind.__name__}",
                    found=repr(data.get(key))[:80],
                    fix="re-export the artifact",
                )
        files = data.get("files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise ArtifactError(f"{where}: 'files' must map file names to hashes", found=repr(files)[:80])
        shapes = data.get("validation_shapes") or []
        if not isinstance(shapes, list) or not all(
            isinstance(s, dict) and all(isinstance(v, int) for v in s.values()) for s in shapes
        ):
            raise ArtifactError(f"{where}: 'validation_shapes' must be a list of axis→size maps")
        return cls(
            format=data["format"],
            graph=data["graph"],
            source=data["source"],
            task=data["task"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            validation_shapes=tuple(dict(s) for s in shapes),
            tolerance=dict(data.get("tolerance") or {}),
            export=dict(data.get("export") or {}),
            tool_versions=dict(data.get("tool_versions") or {}),
            passes=tuple(data.get("passes") or ()),
            files=files,
            validation=data.get("validation"),
            format_version=version,
        )


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: its directory and manifest."""

    path: Path
    manifest: Manifest

    @property
    def graph_path(self) -> Path:
        """The main graph file."""
        return self.path / self.manifest.graph


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_member(root: Path, name: str) -> Path:
    """Resolve `name` inside `root`, refusing absolute paths, `..` and links that lead outside."""
    if not name or os.path.isabs(name) or ".." in Path(name).parts:
        raise ArtifactError(
            "an artifact file name must be a relative path inside the artifact directory",
            found=repr(name),
            fix="do not load this artifact; re-export it",
        )
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ArtifactError(
            "an artifact file points outside the artifact directory", found=f"{name} -> {resolved}"
        )
    return resolved


def hash_files(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `root` except the manifest, keyed by relative path."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (MANIFEST_NAME, PID_NAME):
            rel = path.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (temp file + rename) inside `root`."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest.to_dict(), fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST_NAME)


def read_manifest(path: Path) -> Manifest:
    """Read manifest.json from an artifact directory, without checking the files."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no artifact at {path}", found="the path does not exist", fix="check the path")
    if not path.is_dir():
        raise ArtifactError(
            f"{path} is not an artifact directory",
            found="a file",
            fix="pass the directory that `tracefuse export -o` wrote",
        )
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise ArtifactError(
            f"{path} has no {MANIFEST_NAME}",
            found=", ".join(sorted(p.name for p in path.iterdir())[:10]) or "an empty directory",
            fix="pass the directory that `tracefuse export -o` wrote",
        )
    try:
        data = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON", found=str(exc)[:200], fix="re-export") from exc
    return Manifest.from_dict(data, where=str(mpath))


def load_artifact(path: str | os.PathLike[str], *, verify: bool = True) -> Artifact:
    """Load an artifact directory. With `verify` (the default) every file's sha256 must match."""
    root = Path(path)
    manifest = read_manifest(root)
    safe_member(root, manifest.graph)
    if manifest.graph not in manifest.files:
        raise ArtifactError(f"the manifest at {root} does not list its graph file '{manifest.graph}'")
    for name, entry in manifest.files.items():
        member = safe_member(root, name)
        if not member.is_file():
            raise ArtifactError(
                f"the artifact at {root} is incomplete", found=f"'{name}' is missing", fix="re-export it"
            )
        if verify and sha256_file(member) != entry.get("sha256"):
            raise ArtifactError(
                f"the artifact at {root} was modified after it was written: '{name}' does not match "
                "the sha256 in its manifest",
                fix="re-export it, or restore the original file; never load a file you did not produce",
            )
    return Artifact(root, manifest)


def _clean_stale_staging(parent: Path) -> None:
    for stale in parent.glob(STAGING_PREFIX + "*"):
        # A staging directory whose process is gone is garbage from a killed run.
        pid_file = stale / PID_NAME
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, 0)
            continue  # still being written by a live process
        except (OSError, ValueError):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_artifact(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it replaces `out`, on error it is removed.

    Refuses an existing non-empty `out` unless `overwrite`.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"the output path {out} is a file", fix="choose a directory path for the artifact")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(
            f"the output directory {out} is not empty",
            fix="choose another path, or pass --overwrite to replace it",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_staging(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + out.name + "-", dir=out.parent))
    (staging / PID_NAME).write_text(str(os.getpid()))
    try:
        yield staging
        (staging / PID_NAME).unlink()
        _commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _commit(staging: Path, out: Path) -> None:
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + "old-", dir=out.parent))
        os.replace(out, trash / "old")
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)
    logger.info("wrote artifact %s", out)


def finalize(staging: Path, manifest: Manifest) -> Manifest:
    """Hash every file in the staging directory and write the manifest; returns the final manifest."""
    final = dataclasses.replace(manifest, files=hash_files(staging))
    write_manifest(staging, final)
    return final
