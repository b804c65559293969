"""Resource checks made before expensive work: free disk space and available memory, with both sizes named.

A multi-GB export that dies at 90% with ENOSPC or the OOM killer wastes the time and says nothing
useful; these checks fail first, with the needed and available sizes. The estimates are deliberately
simple (the parameter bytes × 1.1): they catch the model that cannot fit, not the one that barely does.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tracefuse.errors import TracefuseError

logger = logging.getLogger(__name__)

OVERHEAD = 1.1
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ResourceError(TracefuseError):
    """Not enough disk space or memory for the work asked for."""


def human(size: int | float) -> str:
    """A byte count as 1.23 GiB / 45.6 MiB / 789 B."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


def parse_size(text: str) -> int:
    """Bytes from '8G', '512MiB', '1.5GB' or '1000000' (binary units); TracefuseError when unreadable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise TracefuseError(f"cannot read the size '{text}'", fix="give a number with an optional unit: 8G, 512M")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available_memory() -> int | None:
    """Memory the kernel can give this process without swapping (MemAvailable), in bytes; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, *, max_memory: int | None = None) -> None:
    """Raise ResourceError when `needed` bytes exceed the available memory (or the `max_memory` cap)."""
    available = available_memory()
    limits = [(v, src) for v, src in ((available, "available memory"), (max_memory, "--max-memory")) if v is not None]
    if not limits:
        return
    limit, source = min(limits)
    if needed > limit:
        raise ResourceError(
            f"{what} needs about {human(needed)} of memory, more than the {human(limit)} of {source}",
            found=f"needed {human(needed)}, available {human(limit)}",
            fix="free memory, use a machine with more, or raise --max-memory if the estimate is too cautious",
        )
    logger.debug("%s: needs ~%s of memory, %s available", what, human(needed), human(limit))


def check_disk(path: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise ResourceError when the file system holding `path` has less than `needed` bytes free."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ResourceError(
            f"{what} needs about {human(needed)} of disk space at {probe}, and only {human(free)} is free",
            found=f"needed {human(needed)}, available {human(free)}",
            fix="free disk space, or write the artifact to another file system",
        )


def module_bytes(module: Any) -> int:
    """Bytes held by a torch module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        key = tensor.data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def checkpoint_bytes(source: str) -> int | None:
    """Size of the weight files of a local checkpoint directory; None for other sources (tiny:, hub ids, …)."""
    path = Path(source)
    if not path.is_dir():
        return None
    return sum(p.stat().st_size for pattern in _WEIGHT_GLOBS for p in path.glob(pattern) if p.is_file())


def check_source(source: str, *, max_memory: int | None = None) -> None:
    """Before loading a local checkpoint, check that its weights fit in memory (×1.1)."""
    size = checkpoint_bytes(source)
    if size:
        check_memory(int(size * OVERHEAD), f"loading the checkpoint {source}", max_memory=max_memory)


def check_export(module: Any, out: str | os.PathLike[str], *, max_memory: int | None = None) -> int:
    """Check memory and disk for exporting `module` to `out`; returns the estimated artifact size in bytes.

    The export holds a second copy of the weights while it serializes the graph, and writes them once.
    """
    needed = int(module_bytes(module) * OVERHEAD)
    check_memory(needed, "exporting this model", max_memory=max_memory)
    check_disk(Path(out).absolute().parent, needed, "the exported artifact")
    return needed
