"""Two processes writing the same output path: the result is always one whole artifact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.security.test_crash import REPO, _env, _leftovers, _marker
from tests.security.writer import write
from tracefuse.artifact import staged_artifact
from tracefuse.errors import ArtifactError


def _start(out, marker, *flags) -> subprocess.Popen:
    # --hold keeps each writer inside its staging step long enough for the two to overlap, and makes
    # the second one's stale-staging cleanup run while the first is still writing.
    return subprocess.Popen([sys.executable, "-m", "tests.security.writer", str(out), marker, "--hold", "1.5", *flags],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_without_overwrite_one_wins_and_the_other_fails_clearly(tmp_path):
    out = tmp_path / "art"
    procs = {m: _start(out, m, "--no-overwrite") for m in ("a", "b")}
    results = {m: (p.wait(timeout=120), p.stderr.read()) for m, p in procs.items()}
    codes = sorted(rc for rc, _ in results.values())
    assert codes == [0, 2], results
    winner = next(m for m, (rc, _) in results.items() if rc == 0)
    loser_err = next(err for rc, err in results.values() if rc == 2)
    # usually both passed the first check and the loser is refused at commit; on a slow machine the
    # second may start after the first committed and be refused up front: both are clean exit-2 failures
    assert ("another process wrote" in loser_err or "is not empty" in loser_err) and str(out) in loser_err
    assert _marker(out) == winner
    assert _leftovers(tmp_path) == []


def test_with_overwrite_both_succeed_and_the_result_is_whole(tmp_path):
    out = tmp_path / "art"
    procs = [_start(out, m) for m in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert _marker(out) in {"a", "b"}
    assert _leftovers(tmp_path) == []


def test_commit_refuses_a_path_written_meanwhile(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(ArtifactError, match="another process wrote") as info:
        with staged_artifact(out) as staging:
            (staging / "model.onnx").write_bytes(b"mine")
            write(str(out), "other", False, 0)  # another writer commits first
    assert "--overwrite" in str(info.value)
    assert _marker(out) == "other"
    assert _leftovers(tmp_path) == []


def test_unwritable_parent_is_a_clear_error(tmp_path):
    import os

    if os.geteuid() == 0:
        # root ignores directory permissions; a path under a regular file is unwritable for anyone
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "art"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "art"
    with pytest.raises(ArtifactError, match="cannot write an artifact in"):
        write(str(out), "x", False, 0)


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_reader_never_fails_while_a_writer_replaces_the_artifact_back_to_back(tmp_path, mode):
    """load_artifact during back-to-back swaps: a whole, verified artifact every time (never 'no manifest',
    'no artifact' or a sha256 mismatch from mixing two versions)."""
    import time

    from tracefuse.artifact import load_artifact

    out = tmp_path / "art"
    write(str(out), "old", True, 0)
    proc = subprocess.Popen([sys.executable, "-m", "tests.security.writer", str(out), "new", "--loop", "100000",
                             *(["--fallback"] if mode == "fallback" else [])], cwd=REPO, env=_env(),
                            stderr=subprocess.DEVNULL)
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            art = load_artifact(out)
            assert art.manifest.source["id"].startswith(("old", "new"))
            seen.add(art.manifest.source["id"])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(seen) > 3, seen  # the writer really was swapping while this read
