"""Resource limits: exports too large for memory or disk fail first, naming the needed and available sizes."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import torch
from typer.testing import CliRunner

from tracefuse import api, resources
from tracefuse.cli import app
from tracefuse.errors import TracefuseError
from tracefuse.resources import ResourceError, check_disk, check_memory, module_bytes, parse_size

Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(("text", "size"), [("8G", 8 << 30), ("512MiB", 512 << 20), ("1.5GB", 3 << 29),
                                            ("1000", 1000), ("2k", 2048)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "8X"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(TracefuseError, match="cannot read the size"):
        parse_size(text)


def test_disk_check_names_needed_and_available(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(ResourceError) as info:
        check_disk(tmp_path / "not" / "yet" / "there", 3 << 30, "the exported artifact")
    assert "needed 3.00 GiB, available 5.00 MiB" in str(info.value)
    check_disk(tmp_path, 1 << 20, "a small file")  # fits: no error


def test_memory_check_uses_the_smaller_of_available_and_cap(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 4 << 30)
    check_memory(1 << 30, "x")
    with pytest.raises(ResourceError, match="needed 5.00 GiB, available 4.00 GiB"):
        check_memory(5 << 30, "x")
    with pytest.raises(ResourceError, match="of --max-memory"):
        check_memory(1 << 30, "x", max_memory=512 << 20)


def test_available_memory_reads_the_system():
    available = resources.available_memory()
    assert available is not None and 0 < available < 1 << 50


def test_module_bytes_counts_shared_weights_once():
    lin = torch.nn.Linear(10, 5)
    model = torch.nn.Sequential(lin, lin)
    assert module_bytes(model) == 4 * (10 * 5 + 5)


def test_export_fails_early_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 1024))
    with pytest.raises(ResourceError, match="disk space") as info:
        api.export("tiny:bert", tmp_path / "out", validate=False)
    assert "available 1.00 KiB" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing staged, nothing written


def test_cli_max_memory_refuses_with_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["export", "tiny:bert", "-o", str(tmp_path / "out"), "--max-memory", "1K"])
    assert result.exit_code == 2, result.output
    assert "--max-memory" in result.output and "needed" in result.output
    assert list(tmp_path.iterdir()) == []


def test_huge_local_checkpoint_is_refused_before_loading(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "bert"}')
    with open(ckpt / "model.safetensors", "wb") as fh:
        fh.truncate(1 << 40)  # a sparse 1 TiB file: its size counts, it takes no disk
    monkeypatch.setattr(resources, "available_memory", lambda: 16 << 30)

    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the memory check")

    monkeypatch.setattr("tracefuse.exporters.sources.load_source", never)
    with pytest.raises(ResourceError, match="loading the checkpoint") as info:
        api.export(str(ckpt), tmp_path / "out")
    assert "needed 1.10 TiB, available 16.00 GiB" in str(info.value)
