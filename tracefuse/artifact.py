"""The artifact: a directory with graph files and `manifest.json`, written atomically, verified on load.

Every stage takes an artifact and returns a new one; nothing is edited in place. A new artifact is
assembled in a staging directory beside its destination and swapped into place only when complete
(tracefuse.atomic), so an export that fails or is killed leaves the previous artifact, or nothing.

Loading trusts a file only as far as its format allows: FORMAT_TRUST says, per format, whether loading
its graph can execute code and which checks run before any runtime reads it (docs/security.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse import atomic
from tracefuse.atomic import STAGING_PREFIX, WRITER_LOCK  # noqa: F401 - STAGING_PREFIX is re-exported
from tracefuse.errors import ArtifactError
from tracefuse.trust import FORMAT_TRUST, call_target, format_trust, refuse_unverified

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PID_NAME = WRITER_LOCK  # the writer's lock file inside a staging directory; never part of an artifact


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
            shape = data["shape"]
            fill = data.get("fill") or {}
            dims_ok = all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool))
                          for d in shape)
            if not isinstance(shape, list | tuple) or not dims_ok or not isinstance(fill, dict):
                raise TypeError("shape must be a list of sizes and axis names, fill a mapping")
            if not isinstance(data["name"], str) or not isinstance(data["dtype"], str):
                raise TypeError("name and dtype must be strings")
            return cls(data["name"], data["dtype"], tuple(shape), dict(fill))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
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
    preprocessor: dict[str, Any] | None = None  # the bundled tokenizer/processor files (--with-preprocessor)
    # How a runtime should open the graph, by runtime: {"onnxruntime": {"disabled_optimizers": [...]}} names
    # ONNX Runtime's load-time fusions a pass chose against (the cpu preset: SkipLayerNormFusion, BiasGeluFusion).
    runtime_hints: dict[str, Any] = field(default_factory=dict)

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
            isinstance(s, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in s.values())
            for s in shapes
        ):
            raise ArtifactError(f"{where}: 'validation_shapes' must be a list of axis→size maps")
        optional = {"tolerance": dict, "export": dict, "tool_versions": dict, "passes": list, "validation": dict,
                    "preprocessor": dict, "runtime_hints": dict}
        for key, kind in optional.items():
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise ArtifactError(f"{where}: key '{key}' must be a {kind.__name__}", found=repr(data[key])[:80],
                                    fix="re-export the artifact")
        tolerance = data.get("tolerance") or {}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in tolerance.values()):
            raise ArtifactError(f"{where}: 'tolerance' must map names to numbers", found=repr(tolerance)[:80])
        if not all(isinstance(p, dict) for p in data.get("passes") or ()):
            raise ArtifactError(f"{where}: 'passes' must be a list of objects", found=repr(data["passes"])[:80])
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
            preprocessor=data.get("preprocessor"),
            runtime_hints=dict(data.get("runtime_hints") or {}),
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
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name) or ".." in Path(name).parts:
        raise ArtifactError(
            "an artifact file name must be a relative path inside the artifact directory",
            found=repr(name),
            fix="do not load this artifact; re-export it",
        )
    try:
        resolved = (root / name).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, or a name the OS cannot take
        raise ArtifactError("an artifact file name cannot be resolved", found=f"{name!r}: {exc}") from exc
    if not resolved.is_relative_to(root.resolve()):
        raise ArtifactError(
            "an artifact file points outside the artifact directory", found=f"{name} -> {resolved}"
        )
    return resolved


def hash_files(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `root` except the manifest, keyed by relative path."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (MANIFEST_NAME, WRITER_LOCK):
            rel = path.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (temp file + rename) inside `root`."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=root)
    os.chmod(tmp, 0o666 & ~atomic._umask())  # mkstemp makes 0600; a manifest is read by whoever runs the model
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
    except OSError as exc:
        raise ArtifactError(f"cannot read {mpath}", found=str(exc)[:200], fix="check its permissions") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON", found=str(exc)[:200], fix="re-export") from exc
    return Manifest.from_dict(data, where=str(mpath))


def _bare_graph(path: Path) -> tuple[Path, str, str]:
    """(root, graph name, format) of a manifest-less graph file, or of a directory holding exactly one."""
    by_suffix = {sfx: fmt for fmt, t in FORMAT_TRUST.items() for sfx in t.suffixes}
    if path.is_file():
        candidates = [path]
    else:
        candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in by_suffix)
    if len(candidates) != 1 or candidates[0].suffix not in by_suffix:
        raise ArtifactError(
            f"{path} has no {MANIFEST_NAME}" if path.is_dir() else f"{path} is not an artifact directory",
            found=", ".join(sorted(p.name for p in (path.iterdir() if path.is_dir() else [path]))[:10])
            or "an empty directory",
            fix="pass the directory that `tracefuse export -o` wrote (or one holding a single graph file "
            f"ending in {', '.join(sorted(by_suffix))})",
        )
    graph = candidates[0]
    return graph.parent, graph.name, by_suffix[graph.suffix]


def _load_unverified(path: Path, trust_unverified: bool) -> Artifact:
    root, graph, fmt = _bare_graph(path)
    refuse_unverified(root / graph, fmt, trust_unverified=trust_unverified)
    target = format_trust(fmt).bare
    if target is None:
        raise ArtifactError(f"tracefuse cannot describe a {fmt} graph without a manifest", fix="re-export it")
    artifact = Artifact(root, call_target(target, root, graph))
    _run_check(artifact)
    return artifact


def _run_check(artifact: Artifact) -> None:
    target = format_trust(artifact.manifest.format).check
    if target is not None:
        call_target(target, artifact)


_LOAD_ATTEMPTS = 10  # reads of an artifact that writers keep replacing before giving up


def load_artifact(
    path: str | os.PathLike[str], *, verify: bool = True, trust_unverified: bool = False
) -> Artifact:
    """Load an artifact directory. With `verify` (the default) every file's sha256 must match.

    `verify=False` skips hashing for speed; the path checks and the format's checks still run, and
    formats whose loading executes code are still hash-checked by their runners. A path with no
    manifest (a directory holding one graph file, or the file itself) is loaded after
    `refuse_unverified`: ONNX with a warning, code-executing formats only with `trust_unverified`.
    """
    root = Path(path)
    if _has_no_manifest(root):
        return _load_unverified(root, trust_unverified)
    for attempt in range(_LOAD_ATTEMPTS):
        found = atomic.recover(root)  # caught between a fallback swap's two renames: wait for it to finish
        identity = _dir_identity(root)
        try:
            return _load_checked(root, verify)
        except (ArtifactError, OSError):
            # A writer swapped a new artifact in while this one was being read: read the new one.
            swapped = _dir_identity(root) != identity or (found and identity is None)
            if attempt == _LOAD_ATTEMPTS - 1 or not swapped:
                raise
            logger.info("%s was replaced while it was being loaded; loading it again", root)
    raise AssertionError("unreachable")


def _has_no_manifest(root: Path) -> bool:
    """True for a graph file, or a directory that holds no manifest (not one caught mid-swap by a writer)."""
    for _ in range(3):
        if not os.path.lexists(root):
            atomic.recover(root)  # waits for a writer's swap in progress, or rolls back a dead one's
        identity = _dir_identity(root)
        if identity is None or root.is_file():
            return identity is not None
        if (root / MANIFEST_NAME).exists():
            return False
        if _dir_identity(root) == identity:
            return True  # the same directory before and after the look: it really has no manifest
        # a fallback swap renamed the directory away between the two looks: look again
    return False


def _dir_identity(root: Path) -> tuple[int, int, int] | None:
    """Which directory `root` names now; the ctime tells apart a new directory that reuses a deleted one's inode."""
    try:
        st = os.stat(root)
        return st.st_dev, st.st_ino, st.st_ctime_ns
    except OSError:
        return None


def _load_checked(root: Path, verify: bool) -> Artifact:
    manifest = read_manifest(root)
    safe_member(root, manifest.graph)
    if manifest.graph not in manifest.files:
        raise ArtifactError(f"the manifest at {root} does not list its graph file '{manifest.graph}'")
    unhashed = [n for n in (manifest.preprocessor or {}).get("files", []) if n not in manifest.files]
    if unhashed:  # a bundled tokenizer is verified like the graph; one without a hash is not trusted
        raise ArtifactError(f"the manifest at {root} lists preprocessor files without a sha256",
                            found=", ".join(map(str, unhashed[:5])), fix="re-export it with --with-preprocessor")
    for name, entry in manifest.files.items():
        member = safe_member(root, name)
        if not member.is_file():
            raise ArtifactError(
                f"the artifact at {root} is incomplete", found=f"'{name}' is missing", fix="re-export it"
            )
        if verify and _digest(member, name) != entry.get("sha256"):
            raise ArtifactError(
                f"the artifact at {root} was modified after it was written: '{name}' does not match "
                "the sha256 in its manifest",
                fix="re-export it, or restore the original file; never load a file you did not produce",
            )
    artifact = Artifact(root, manifest)
    _run_check(artifact)
    return artifact


def _digest(member: Path, name: str) -> str:
    try:
        return sha256_file(member)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact file '{name}'", found=str(exc)[:200]) from exc


def _refuse_existing(overwrite: bool) -> Any:
    def check(out: Path) -> None:
        if os.path.lexists(out) and not out.is_dir():
            raise ArtifactError(f"the output path {out} is a file", fix="choose a directory path for the artifact")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise ArtifactError(
                f"the output directory {out} is not empty",
                fix="choose another path, or pass --overwrite to replace it",
            )
        if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            # --overwrite replaces an artifact; it never deletes an unrelated directory (`-o . --overwrite`).
            raise ArtifactError(
                f"--overwrite replaces only a tracefuse artifact, and {out} is a non-empty directory without "
                f"{MANIFEST_NAME}",
                fix="choose an empty or new output directory",
            )

    return check


@contextlib.contextmanager
def staged_artifact(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it replaces `out`, on error it is removed.

    Refuses an existing non-empty `out` unless `overwrite`, both now and again at commit time (under a
    lock: when another process wrote `out` meanwhile, this one fails with ArtifactError). The swap is
    atomic where the OS allows (see tracefuse.atomic); a killed writer's leftovers are cleaned next time.
    """
    out = Path(out).absolute()
    check = _refuse_existing(overwrite)
    check(out)
    with atomic.staging_dir(out, _committed_check(check)) as staging:
        yield staging


def _committed_check(check: Any) -> Any:
    def again(out: Path) -> None:
        try:
            check(out)
        except ArtifactError as exc:
            raise ArtifactError(
                f"another process wrote {out} while this one was writing it; this result was discarded",
                found=exc.problem,
                fix="write to a different path, or pass --overwrite to replace it",
            ) from None

    return again


def finalize(staging: Path, manifest: Manifest) -> Manifest:
    """Hash every file in the staging directory and write the manifest; returns the final manifest."""
    atomic.crash_point("after-graph")
    final = dataclasses.replace(manifest, files=hash_files(staging))
    write_manifest(staging, final)
    return final
