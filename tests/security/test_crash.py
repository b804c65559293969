"""Crash safety: a writer SIGKILLed at any point leaves the complete old artifact or the complete new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.security.helpers import copy_artifact
from tests.security.writer import write
from tracefuse.artifact import load_artifact
from tracefuse.atomic import CRASH_ENV, CRASH_POINTS, OLD_PREFIX, STAGING_PREFIX

REPO = Path(__file__).resolve().parents[2]


def _env(crash: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env["PYTHONPATH"] = str(REPO)
    if crash:
        env[CRASH_ENV] = crash
    return env


def _writer(out: Path, marker: str, *flags: str, crash: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.security.writer", str(out), marker, *flags], cwd=REPO,
                          env=_env(crash), capture_output=True, text=True, timeout=120)


def _marker(out: Path) -> str | None:
    """The marker of the complete artifact at `out`, or None when there is none; fails on a partial one."""
    if not out.exists() and not any(p.name.startswith(OLD_PREFIX) for p in out.parent.iterdir()):
        return None
    # A reader races the writer: a swap may land between load_artifact and the read of note.txt (each read
    # then sees a whole artifact, but not the same one). Judge only a snapshot no swap interrupted.
    for _ in range(50):
        art = load_artifact(out)  # every file's sha256 must match the manifest
        try:
            note = (out / "note.txt").read_text()
            names = sorted(p.name for p in out.iterdir())
        except FileNotFoundError:
            continue  # these raw reads (unlike load_artifact) fell between a fallback swap's two renames
        if load_artifact(out).manifest.source["id"] != art.manifest.source["id"]:
            continue  # swapped meanwhile: read again
        assert note == art.manifest.source["id"] * 1000
        assert names == ["manifest.json", "model.onnx", "note.txt"]
        return art.manifest.source["id"]
    raise AssertionError("the artifact changed under every one of 50 reads")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((STAGING_PREFIX, OLD_PREFIX)))


CASES = [
    # (crash point, artifact already there, swap mode, what the output path must hold afterwards)
    ("after-graph", True, "exchange", "old"), ("before-commit", True, "exchange", "old"),
    # exchange: the swap is one step, so once it ran the new artifact is in place
    ("during-swap", True, "exchange", "new"), ("after-swap", True, "exchange", "new"),
    ("after-graph", True, "fallback", "old"), ("before-commit", True, "fallback", "old"),
    # fallback (two renames): a swap that died half-way is rolled back to the old artifact
    ("during-swap", True, "fallback", "old"), ("after-swap", True, "fallback", "new"),
    # a fresh path takes one plain rename (no during-swap point in either mode)
    ("after-graph", False, "exchange", None), ("before-commit", False, "exchange", None),
    ("after-swap", False, "exchange", "new"),
]
assert {case[0] for case in CASES} == set(CRASH_POINTS)  # a new crash point needs its cases here


@pytest.mark.parametrize(("point", "existing", "mode", "expected"), CASES)
def test_killed_writer_leaves_old_or_new_artifact(tmp_path, monkeypatch, point, existing, mode, expected):
    out = tmp_path / "art"
    if existing:
        write(str(out), "old", True, 0)
    result = _writer(out, "new", *(["--fallback"] if mode == "fallback" else []), crash=point)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _marker(out) == expected
    # the next run cleans up what the killed one left behind
    write(str(tmp_path / "other"), "other", False, 0)
    assert _leftovers(tmp_path) == []
    assert _marker(out) == expected


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_writer_killed_while_overwriting_in_a_loop(tmp_path, mode):
    out = tmp_path / "art"
    write(str(out), "old", True, 0)
    for pause in (0.0, 0.07):
        proc = subprocess.Popen([sys.executable, "-m", "tests.security.writer", str(out), "new", "--loop", "1000",
                                 *(["--fallback"] if mode == "fallback" else [])], cwd=REPO, env=_env(),
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (_marker(out) or "").startswith("new") and time.monotonic() < deadline:
            time.sleep(0.02)  # reading while the writer swaps: load_artifact must still see whole artifacts
        time.sleep(pause)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-loop, not finished
        assert (_marker(out) or "").startswith("new")
    write(str(tmp_path / "other"), "other", False, 0)
    assert _leftovers(tmp_path) == []


def test_killed_cli_export_over_an_existing_artifact(tmp_path, bert_artifact):
    out = copy_artifact(bert_artifact, tmp_path / "bert")
    before = load_artifact(out).manifest.files
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tracefuse"), "export", "tiny:bert", "-o", str(out), "--overwrite",
         "--no-validate"], cwd=REPO, env=_env("after-graph"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    staged = [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert len(staged) == 1 and (staged[0] / "model.onnx").is_file()  # killed after writing its graph
    assert load_artifact(out).manifest.files == before  # the old artifact, complete and verified
    write(str(tmp_path / "other"), "other", False, 0)
    assert _leftovers(tmp_path) == []


def test_artifact_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write(str(tmp_path / "art"), "x", False, 0)
    finally:
        os.umask(old)
    assert (tmp_path / "art").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert (tmp_path / "art" / "manifest.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.mark.parametrize(("point", "replaced"), [("before-commit", False), ("after-swap", True)])
def test_killed_cli_optimize_over_an_existing_artifact(tmp_path, bert_artifact, point, replaced):
    out = copy_artifact(bert_artifact, tmp_path / "opt")
    before = load_artifact(out).manifest
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tracefuse"), "optimize", str(bert_artifact), "-o", str(out),
         "--overwrite", "--preset", "cpu", "--no-validate"],
        cwd=REPO, env=_env(point), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    after = load_artifact(out).manifest  # complete and verified either way
    assert (after.passes != before.passes) is replaced and (after.files != before.files) is replaced
    write(str(tmp_path / "other"), "other", False, 0)
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2(RENAME_EXCHANGE) is Linux-only")
def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    from tracefuse.atomic import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "from_b").write_text("b")
    assert _exchange(tmp_path / "a", tmp_path / "b") is True  # the atomic path is the one in use here
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["from_b"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from_a"]


def test_overwriting_a_symlinked_output_leaves_no_litter(tmp_path):
    real = tmp_path / "real"
    write(str(real), "old", False, 0)
    (tmp_path / "link").symlink_to(real)
    write(str(tmp_path / "link"), "new", True, 0)
    assert _marker(tmp_path / "link") == "new" and not (tmp_path / "link").is_symlink()
    assert _marker(real) == "old"  # what the link pointed to is left alone
    assert _leftovers(tmp_path) == []
