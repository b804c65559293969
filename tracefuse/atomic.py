"""Crash-safe, concurrency-safe replacement of a directory: staging, locks, the atomic swap, cleanup.

How an artifact reaches its output path `out` (see docs/security.md for why this scheme):

1. Under the parent lock (`<parent>/.tracefuse.lock`, an fcntl flock), stale staging directories of
   dead writers are removed (and a half-finished fallback swap is rolled back), then a staging
   directory `<parent>/.tracefuse-staging-<name>-XXXX` is created holding a writer lock file that
   this process keeps flocked while it writes. A staging directory whose writer lock can be taken,
   or that has none, belongs to nobody alive.
2. The caller writes the artifact into the staging directory.
3. Under the parent lock again, the caller's precondition is re-checked (another process may have
   written `out` meanwhile) and the staging directory is swapped in: with Linux `renameat2
   (RENAME_EXCHANGE)` the old and new directories trade places in one step, so `out` always holds a
   complete artifact, old or new. Where the kernel or file system lacks it, `out` is renamed to
   `<parent>/.tracefuse-old-<name>` and the staging directory renamed to `out`; a crash between the
   two is rolled back by the next writer's cleanup.
4. The old artifact, now under a staging name with no writer lock, is deleted.

`TRACEFUSE_TEST_CRASH_AT=<point>` makes the process SIGKILL itself at a named point, so tests can
crash a real export deterministically: after-graph, before-commit, during-swap, after-swap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tracefuse.errors import ArtifactError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; single-writer use only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".tracefuse-staging-"
OLD_PREFIX = ".tracefuse-old-"
PARENT_LOCK = ".tracefuse.lock"
WRITER_LOCK = ".tracefuse-writer.lock"
CRASH_ENV = "TRACEFUSE_TEST_CRASH_AT"
CRASH_POINTS = ("after-graph", "before-commit", "during-swap", "after-swap")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process here when the environment variable TRACEFUSE_TEST_CRASH_AT is `name`."""
    if os.environ.get(CRASH_ENV) == name:
        logger.warning("%s=%s: killing this process", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `lock_path` (created if missing) for the duration of the block."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file: a read-only descriptor can hold a flock too
        fd = os.open(lock_path, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _hold(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _owner_alive(staging: Path) -> bool:
    """True when a live process holds the writer lock of `staging`."""
    try:
        fd = os.open(staging / WRITER_LOCK, os.O_RDONLY)
    except OSError:
        return False  # no lock file: created by a dead writer, or an old directory left after a swap
    try:
        if fcntl is None:
            return True
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def clean_stale(parent: Path) -> None:
    """Remove staging directories of dead writers and roll back a half-done fallback swap (hold the parent lock)."""
    for old in parent.glob(OLD_PREFIX + "*"):
        target = parent / old.name[len(OLD_PREFIX):]
        if not os.path.lexists(target):
            logger.warning("restoring %s: a writer died while replacing it", target)
            os.rename(old, target)
        else:
            _remove(old)
    for stale in parent.glob(STAGING_PREFIX + "*"):
        if stale.is_symlink() or (stale.is_dir() and not _owner_alive(stale)):
            logger.info("removing stale staging directory %s", stale)
            _remove(stale)


def recover(out: Path) -> bool:
    """Make a missing `out` whole again if a writer is replacing it; True if `out` exists afterwards.

    A live writer's fallback swap in progress is waited for (it holds the parent lock); one that died
    half-way is rolled back to the previous artifact. A path no writer ever used costs no lock.
    """
    out = Path(out).absolute()
    old = out.parent / (OLD_PREFIX + out.name)
    if os.path.lexists(out):
        return True
    if not old.is_dir() and not (out.parent / PARENT_LOCK).exists():
        return False
    try:
        with locked(out.parent / PARENT_LOCK):
            if os.path.lexists(out) or not old.is_dir():
                return os.path.lexists(out)
            logger.warning("restoring %s: a writer died while replacing it", out)
            os.rename(old, out)
            return True
    except OSError as exc:  # a read-only directory: leave it to the next writer
        logger.warning("cannot restore %s from %s: %s", out, old, exc)
        return False


def _remove(path: Path) -> None:
    """Delete a directory tree, or the symlink that stands where one was (rmtree refuses links)."""
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where the OS or file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(staging: Path, out: Path) -> None:
    """Put `staging` at `out` (hold the parent lock). An old `out` ends up at `staging`'s name, to be deleted."""
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        crash_point("during-swap")
        return
    logger.info("renameat2(RENAME_EXCHANGE) unavailable here; replacing %s in two renames", out)
    old = out.parent / (OLD_PREFIX + out.name)
    os.rename(out, old)
    crash_point("during-swap")
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)
        raise
    os.rename(old, staging)


@contextlib.contextmanager
def staging_dir(out: Path, precondition: Callable[[Path], None]) -> Iterator[Path]:
    """Yield a fresh staging directory beside `out`; on normal exit swap it into `out`, on error remove it.

    `precondition(out)` runs again under the parent lock just before the swap; it raises to refuse.
    """
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with locked(parent / PARENT_LOCK):
            clean_stale(parent)
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}-", dir=parent))
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; an artifact is shared like any directory
            fd = _hold(staging / WRITER_LOCK)
    except OSError as exc:
        raise ArtifactError(f"cannot write an artifact in {parent}", found=str(exc)[:200],
                            fix="choose an output path in a directory you can write to") from exc
    try:
        yield staging
        crash_point("before-commit")
        with locked(parent / PARENT_LOCK):
            precondition(out)
            os.unlink(staging / WRITER_LOCK)
            swap_in(staging, out)
        crash_point("after-swap")
    except BaseException:
        _remove(staging)
        raise
    finally:
        os.close(fd)
    _remove(staging)  # the previous artifact (or the symlink that stood at `out`), if there was one
    logger.info("wrote %s", out)
