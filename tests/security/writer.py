"""A tiny artifact writer for the crash and concurrency tests, run as a subprocess.

python -m tests.security.writer OUT MARKER [--loop N] [--fallback] [--no-overwrite] [--hold SECONDS]
writes a valid ONNX artifact whose note.txt and manifest source id are MARKER (N times with --loop);
--fallback disables renameat2 so the two-rename path is used; --hold sleeps inside the staging step.
TRACEFUSE_TEST_CRASH_AT in the environment kills it at a named point (tracefuse.atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from tests.security.helpers import add_model
from tracefuse import atomic
from tracefuse.artifact import Manifest, TensorSpec, finalize, staged_artifact
from tracefuse.errors import TracefuseError


def write(out: str, marker: str, overwrite: bool, hold: float) -> None:
    """Write one artifact marked `marker` at `out`."""
    with staged_artifact(out, overwrite=overwrite) as staging:
        (staging / "model.onnx").write_bytes(add_model().SerializeToString())
        (staging / "note.txt").write_text(marker * 1000)
        time.sleep(hold)
        manifest = Manifest(
            format="onnx", graph="model.onnx", source={"kind": "test", "id": marker}, task="custom",
            inputs=(TensorSpec("x", "float32", (4,)),), outputs=(TensorSpec("y", "float32", (4,)),),
        )
        finalize(staging, dataclasses.replace(manifest))


def main() -> int:
    """Parse the arguments and write; exit 2 with the message on a TracefuseError."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("marker")
    parser.add_argument("--loop", type=int, default=1)
    parser.add_argument("--fallback", action="store_true")
    parser.add_argument("--no-overwrite", action="store_true")
    parser.add_argument("--hold", type=float, default=0.0)
    args = parser.parse_args()
    if args.fallback:
        atomic._exchange = lambda a, b: False
    try:
        for i in range(args.loop):
            write(args.out, f"{args.marker}{i if args.loop > 1 else ''}", not args.no_overwrite, args.hold)
    except TracefuseError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
