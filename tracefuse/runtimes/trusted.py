"""Hash checks for graph files whose loading executes code (TorchScript, pickled ExportedPrograms, AOT packages).

`load_artifact(verify=False)` skips the hash check for speed; runners of these formats must not follow
it, because opening a modified file runs whatever the file contains. They read the file's bytes once,
check them against the sha256 in the manifest, and load from those same bytes where the loader
accepts a buffer, so the file cannot be swapped between the check and the load.
"""

from __future__ import annotations

import hashlib
import logging

from tracefuse.artifact import Artifact, safe_member, sha256_file
from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)


def _expected(artifact: Artifact, name: str) -> str:
    entry = artifact.manifest.files.get(name) or {}
    expected = entry.get("sha256")
    if not isinstance(expected, str) or not expected:
        raise ArtifactError(
            f"the manifest of {artifact.path} records no sha256 for '{name}'; tracefuse will not open a "
            "file whose loading executes code without one",
            fix="re-export the artifact with tracefuse",
        )
    return expected


def _refuse(artifact: Artifact, name: str) -> ArtifactError:
    return ArtifactError(
        f"refusing to open '{name}' of {artifact.path}: its sha256 does not match the manifest, and loading "
        "this format executes code from the file",
        found="the file was modified after export",
        fix="re-export the artifact, or restore the original file; never load a file you did not produce",
    )


def verified_bytes(artifact: Artifact, name: str) -> bytes:
    """The bytes of artifact file `name`, after checking their sha256 against the manifest (always)."""
    expected = _expected(artifact, name)
    data = safe_member(artifact.path, name).read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise _refuse(artifact, name)
    logger.debug("verified %s (%d bytes)", name, len(data))
    return data


def verify_file(artifact: Artifact, name: str) -> None:
    """Check artifact file `name` against its manifest sha256 (always), for loaders that need a path."""
    expected = _expected(artifact, name)
    if sha256_file(safe_member(artifact.path, name)) != expected:
        raise _refuse(artifact, name)


def require_format(artifact: Artifact, runtime: str, fmt: str) -> None:
    """Raise ArtifactError unless `artifact` has format `fmt`."""
    if artifact.manifest.format != fmt:
        raise ArtifactError(
            f"runtime {runtime} runs {fmt} artifacts", found=f"a {artifact.manifest.format} artifact",
            fix="choose a runtime for that format (or leave --runtime out)",
        )
