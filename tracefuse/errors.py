"""The errors tracefuse raises: each says what was expected, what was found, and what to do."""

from __future__ import annotations


class TracefuseError(Exception):
    """A usage, input or environment problem. The CLI maps it to exit code 2.

    The message is built from three parts so that every error reads the same way:
    what went wrong (and what was expected), what was found, and what the user can do about it.
    """

    exit_code = 2

    def __init__(self, problem: str, *, found: str | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.found = found
        self.fix = fix
        parts = [problem]
        if found:
            parts.append(f"found: {found}")
        if fix:
            parts.append(f"what to do: {fix}")
        super().__init__("\n  ".join(parts))


class SourceError(TracefuseError):
    """The model source (path, hub id, tiny:, module:factory) cannot be resolved or loaded."""


class ArtifactError(TracefuseError):
    """An artifact is missing, incomplete, tampered with, or written by an incompatible version."""


class ExportError(TracefuseError):
    """The exporter failed to turn the model into a graph."""


class SpecializedAxesError(ExportError):
    """torch.export keeps axes static that the spec declared dynamic (the model specializes them); `axes`
    names them, to export again with those axes fixed (`--fixed-axes`)."""

    def __init__(self, problem: str, *, axes: tuple[str, ...], found: str | None = None,
                 fix: str | None = None) -> None:
        super().__init__(problem, found=found, fix=fix)
        self.axes = axes


class FeedError(TracefuseError):
    """Inputs given to a runner do not match the artifact's declared inputs."""


class MissingDependencyError(TracefuseError):
    """An optional runtime or extra is not installed."""
