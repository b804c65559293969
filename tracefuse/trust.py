"""Trust per graph format: can loading it execute code, and which checks run before a runtime reads it.

tracefuse.artifact.load_artifact consults FORMAT_TRUST; every new format registers one entry here
(one line), and a format with no entry is treated as able to execute code. See docs/security.md.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from tracefuse.errors import ArtifactError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FormatTrust:
    """How far a graph format can be trusted, and the checks that run before a runtime reads its files.

    `executes_code`: loading a graph file of this format can run arbitrary code (TorchScript, pt2 and
    anything pickled): such a file is opened only when its sha256 matches the manifest (runners use
    tracefuse.runtimes.trusted), and a manifest-less one only with trust_unverified.
    `check`: "module:function" called with the Artifact by load_artifact, before any runtime sees it
    (ONNX: external-data locations must stay inside the artifact and be listed in the manifest).
    `bare`: "module:function" `(root, graph_name) -> Manifest` describing a graph file that came
    without a manifest; `suffixes` are the graph file endings that identify the format.
    """

    executes_code: bool = True
    check: str | None = None
    bare: str | None = None
    suffixes: tuple[str, ...] = ()


# A format not listed here is treated as able to execute code: register new formats explicitly.
FORMAT_TRUST: dict[str, FormatTrust] = {
    "onnx": FormatTrust(
        executes_code=False,
        check="tracefuse.graphs.onnx_trust:check_artifact",
        bare="tracefuse.graphs.onnx_trust:bare_manifest",
        suffixes=(".onnx",),
    ),
    # Loading runs code (pickle, TorchScript, AOTInductor shared libraries): runners use
    # tracefuse.runtimes.trusted.verified_bytes. No `bare` yet: a manifest-less file is refused (and,
    # with trust_unverified, reported as not describable) until their owner adds one.
    "torchscript": FormatTrust(executes_code=True, suffixes=(".pt", ".ts")),
    "pt2": FormatTrust(executes_code=True, suffixes=(".pt2",)),
    # A flatbuffer: no code in the file (custom ops need kernels the host registers); hashes still checked.
    "tflite": FormatTrust(executes_code=False, suffixes=(".tflite",)),
}


def format_trust(fmt: str) -> FormatTrust:
    """The trust entry of a format; an unregistered format is assumed to execute code."""
    return FORMAT_TRUST.get(fmt, FormatTrust())


def call_target(target: str, *args: Any) -> Any:
    """Import and call a "module:function" registry target."""
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)(*args)


def refuse_unverified(path: str | os.PathLike[str], fmt: str, *, trust_unverified: bool) -> None:
    """Gate for loading a graph that has no manifest (so no hash to check it against).

    Formats whose loading executes code are refused unless `trust_unverified`; the others are allowed
    with a warning. Every loader of a manifest-less file calls this first.
    """
    if format_trust(fmt).executes_code and not trust_unverified:
        raise ArtifactError(
            f"{path} has no {MANIFEST}, and loading a {fmt} file can execute arbitrary code",
            found="no manifest to check the file's sha256 against",
            fix="load only files you produced yourself: re-export with tracefuse, or pass --trust-unverified "
            "(trust_unverified=True) if you trust whoever wrote it",
        )
    logger.warning("%s has no %s: loading a %s graph whose origin tracefuse cannot verify", path, MANIFEST, fmt)


