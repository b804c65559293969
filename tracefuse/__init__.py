"""tracefuse: export PyTorch models to deployable graphs, optimize them, run them, prove the numbers."""

from __future__ import annotations

__version__ = "0.1.0"

from tracefuse.errors import TracefuseError  # noqa: E402


def __getattr__(name: str):
    # The public API imports torch and onnx; keep `import tracefuse` cheap and import it on first use.
    if name in {"export", "validate", "load", "inspect", "run"}:
        from tracefuse import api

        return getattr(api, name)
    raise AttributeError(f"module 'tracefuse' has no attribute {name!r}")


__all__ = ["TracefuseError", "__version__", "export", "inspect", "load", "run", "validate"]
