"""Model sources: tiny:, builtin:, a checkpoint directory, a cached hub id, module:factory, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import save_tiny_checkpoint
from tracefuse.errors import SourceError
from tracefuse.exporters import tasks
from tracefuse.exporters.sources import load_source

REPO_ROOT = Path(__file__).resolve().parents[2]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny BertModel saved with save_pretrained (config.json + model.safetensors)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


@pytest.fixture
def ckpt_copy(checkpoint, tmp_path) -> Path:
    """A private copy of the checkpoint that a test may damage."""
    return Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))


# --- tiny: and builtin: -------------------------------------------------------------------------------


def test_tiny_is_small_seeded_and_deterministic():
    a = load_source("tiny:bert")
    b = load_source("tiny:bert")
    assert a.model_type == "bert" and a.task == "feature-extraction"
    assert a.source["kind"] == "tiny" and a.source["id"] == "tiny:bert"
    assert a.config.num_hidden_layers <= 4 and a.config.hidden_size <= 64
    assert sum(p.numel() for p in a.module.parameters()) < 500_000
    assert not a.module.training
    assert _same_weights(a.module, b.module)


def test_tiny_with_task_builds_the_task_head():
    loaded = load_source("tiny:roberta", "question-answering")
    assert loaded.task == "question-answering"
    assert type(loaded.module).__name__ == "RobertaForQuestionAnswering"


def test_builtin_minilm_loads_real_weights():
    loaded = load_source("builtin:all-MiniLM-L6-v2")
    assert loaded.model_type == "bert"
    assert loaded.task == "feature-extraction"  # config.architectures == ["BertModel"]
    assert loaded.config.num_hidden_layers == 6 and loaded.config.hidden_size == 384
    assert loaded.source["kind"] == "builtin"
    assert loaded.checkpoint_dir is not None and (loaded.checkpoint_dir / "tokenizer.json").is_file()
    # real weights are not a fresh random init: the embedding LayerNorm weight is not all ones
    assert not torch.allclose(loaded.module.embeddings.LayerNorm.weight, torch.ones(384))


def test_unknown_builtin():
    with pytest.raises(SourceError, match="unknown built-in model 'nope'") as info:
        load_source("builtin:nope")
    assert "all-MiniLM-L6-v2" in str(info.value)


# --- local checkpoint directory ---------------------------------------------------------------------


def test_checkpoint_directory(checkpoint):
    from transformers import BertModel

    loaded = load_source(str(checkpoint))
    assert loaded.model_type == "bert" and loaded.task == "feature-extraction"
    assert loaded.source["kind"] == "local" and loaded.source["path"] == str(checkpoint.resolve())
    assert loaded.checkpoint_dir == checkpoint
    assert _same_weights(loaded.module, BertModel.from_pretrained(checkpoint))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pre-1.6"])
def test_checkpoint_with_pickle_bin_loads_plain_tensors(ckpt_copy, zip_format):
    from transformers import BertModel

    reference = BertModel.from_pretrained(ckpt_copy)
    (ckpt_copy / "model.safetensors").unlink()
    torch.save(reference.state_dict(), ckpt_copy / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    loaded = load_source(str(ckpt_copy))
    assert _same_weights(loaded.module, reference)


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("BertForSequenceClassification", "text-classification"),
        ("BertForTokenClassification", "token-classification"),
        ("BertForQuestionAnswering", "question-answering"),
        ("BertForMaskedLM", "fill-mask"),
        ("BertModel", "feature-extraction"),
    ],
)
def test_task_inferred_from_architectures(architecture, task):
    assert tasks.infer_task("bert", [architecture]) == task


def test_task_inference_for_vision_and_unknown_architectures():
    assert tasks.infer_task("vit", ["ViTForImageClassification"]) == "image-classification"
    assert tasks.infer_task("resnet", ["ResNetForImageClassification"]) == "image-classification"
    assert tasks.infer_task("bert", ["SomethingElse"]) == "feature-extraction"
    assert tasks.infer_task("bert", None) == "feature-extraction"


def test_checkpoint_task_inferred_end_to_end(ckpt_copy):
    config = json.loads((ckpt_copy / "config.json").read_text())
    config["architectures"] = ["BertForTokenClassification"]
    config["num_labels"] = 5
    config["id2label"] = {str(i): f"L{i}" for i in range(5)}
    config["label2id"] = {f"L{i}": i for i in range(5)}
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    loaded = load_source(str(ckpt_copy))
    assert loaded.task == "token-classification"
    assert type(loaded.module).__name__ == "BertForTokenClassification"
    # an explicit task wins over the inferred one
    assert load_source(str(ckpt_copy), "feature-extraction").task == "feature-extraction"


# --- hub id from the local cache --------------------------------------------------------------------

HUB_ID = "tracefuse-test/tiny-bert"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(root: Path, checkpoint: Path) -> Path:
    """The Hugging Face hub cache layout: models--org--name/{refs/main, snapshots/<commit>/files}."""
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def hub_cache(tmp_path, checkpoint, monkeypatch) -> Path:
    """A fake local hub cache holding HUB_ID; huggingface_hub reads HF_HUB_CACHE at import, so patch both."""
    from huggingface_hub import constants

    cache = _fake_hub_cache(tmp_path / "hub", checkpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_id_from_local_cache(hub_cache, checkpoint):
    from transformers import BertModel

    loaded = load_source(HUB_ID)
    assert loaded.source["kind"] == "hub" and loaded.source["id"] == HUB_ID
    assert loaded.checkpoint_dir == hub_cache / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT
    assert _same_weights(loaded.module, BertModel.from_pretrained(checkpoint))


def test_uncached_hub_id_clear_error(hub_cache):
    with pytest.raises(SourceError) as info:
        load_source("tracefuse-test/not-cached")
    message = str(info.value)
    assert "'tracefuse-test/not-cached' is not in the local Hugging Face cache" in message
    assert str(hub_cache) in message
    assert "no local directory 'tracefuse-test/not-cached'" in message  # it may be a mistyped relative path
    assert "hf download tracefuse-test/not-cached" in message


def test_hub_cache_found_through_hf_home_in_a_fresh_process(tmp_path, checkpoint):
    """The env var as a user sets it: HF_HOME=<dir> means the hub cache is <dir>/hub."""
    _fake_hub_cache(tmp_path / "home" / "hub", checkpoint)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env["HF_HOME"] = str(tmp_path / "home")
    # Only the cache lookup (load_source's hub step), to keep the fresh process cheap: no torch import.
    code = f"from tracefuse.exporters.sources import _hub_cache_dir; print(_hub_cache_dir({HUB_ID!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    repo = tmp_path / "home" / "hub" / "models--tracefuse-test--tiny-bert"
    assert Path(proc.stdout.strip()) == repo / "snapshots" / COMMIT


# --- module.path:factory ----------------------------------------------------------------------------

FACTORY_MODULE = textwrap.dedent(
    """
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x).relu()

    def make():
        return Net(), {"x": torch.randn(2, 4)}, {"x": {0: "batch"}}

    def make_two():
        return Net(), {"x": torch.randn(2, 4)}

    def make_bad():
        return Net()

    def make_raises():
        raise RuntimeError("factory exploded")

    def make_exits():
        raise SystemExit(0)

    not_callable = 3
    """
)


@pytest.fixture
def factory_module(tmp_path, monkeypatch) -> str:
    name = "tracefuse_test_factory_mod"
    (tmp_path / f"{name}.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_factory_source(factory_module):
    loaded = load_source(f"{factory_module}:make")
    assert type(loaded.module).__name__ == "Net" and not loaded.module.training
    assert loaded.model_type == "custom" and loaded.task == "custom"
    assert loaded.source["kind"] == "factory" and loaded.source["id"] == f"{factory_module}:make"
    assert list(loaded.example_inputs) == ["x"] and tuple(loaded.example_inputs["x"].shape) == (2, 4)
    assert loaded.dynamic_axes == {"x": {0: "batch"}}
    # seeded: the same weights each time
    assert load_source(f"{factory_module}:make").source["weights_sha256"] == loaded.source["weights_sha256"]


def test_factory_without_dynamic_axes(factory_module):
    assert load_source(f"{factory_module}:make_two").dynamic_axes == {}


@pytest.mark.parametrize(
    ("func", "message"),
    [
        ("make_bad", "must return \\(module, example_inputs\\)"),
        ("not_callable", "is not a callable factory"),
        ("missing", "is not a callable factory"),
        ("make_raises", "factory exploded"),
        ("make_exits", "raised an error"),
    ],
)
def test_factory_errors(factory_module, func, message):
    with pytest.raises(SourceError, match=message):
        load_source(f"{factory_module}:{func}")


def test_factory_module_that_does_not_import(tmp_path, monkeypatch):
    (tmp_path / "tracefuse_test_broken_mod.py").write_text("def make(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match="cannot import module 'tracefuse_test_broken_mod'"):
        load_source("tracefuse_test_broken_mod:make")
    with pytest.raises(SourceError, match="cannot import module 'tracefuse_no_such_module_xyz'"):
        load_source("tracefuse_no_such_module_xyz:make")


# --- bad inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["./no/such/dir", "/no/such/checkpoint", "~/no-such-dir-for-tracefuse"])
def test_nonexistent_path(spec):
    with pytest.raises(SourceError, match="does not exist"):
        load_source(spec)


def test_a_file_instead_of_a_directory(checkpoint):
    with pytest.raises(SourceError, match="is not a directory") as info:
        load_source(str(checkpoint / "model.safetensors"))
    assert "config.json" in str(info.value)


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(SourceError, match="has no config.json") as info:
        load_source(str(tmp_path))
    assert "model.safetensors" in str(info.value)


def test_directory_without_weights(ckpt_copy):
    (ckpt_copy / "model.safetensors").unlink()
    with pytest.raises(SourceError, match="no weights"):
        load_source(str(ckpt_copy))


def test_corrupt_safetensors(ckpt_copy):
    (ckpt_copy / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match="model.safetensors is corrupt or truncated"):
        load_source(str(ckpt_copy))


@pytest.mark.parametrize("keep", [0.5, 0.99, 4])
def test_truncated_safetensors(ckpt_copy, keep):
    path = ckpt_copy / "model.safetensors"
    data = path.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:size])
    with pytest.raises(SourceError, match="model.safetensors is corrupt or truncated"):
        load_source(str(ckpt_copy))


class _Payload:
    """A pickled object that would create a file if unpickling ran arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pre-1.6"])
def test_pickle_bin_with_code_is_refused(ckpt_copy, tmp_path, zip_format):
    marker = tmp_path / "code-ran"
    (ckpt_copy / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2), "evil": _Payload(marker)},
               ckpt_copy / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    with pytest.raises(SourceError, match="cannot be loaded safely") as info:
        load_source(str(ckpt_copy))
    assert "pytorch_model.bin" in str(info.value)
    assert not marker.exists()


def test_truncated_pickle_bin(ckpt_copy):
    (ckpt_copy / "model.safetensors").unlink()
    path = ckpt_copy / "pytorch_model.bin"
    torch.save({"w": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SourceError, match="cannot be loaded safely"):
        load_source(str(ckpt_copy))


def test_unknown_model_type_tiny():
    with pytest.raises(SourceError, match="unknown model type 'no-such-model'"):
        load_source("tiny:no-such-model")


def test_unknown_model_type_in_checkpoint(ckpt_copy):
    config = json.loads((ckpt_copy / "config.json").read_text())
    config["model_type"] = "no-such-model"
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match="no-such-model"):
        load_source(str(ckpt_copy))


def test_unknown_task():
    with pytest.raises(SourceError, match="unknown task 'translate-klingon'") as info:
        load_source("tiny:bert", "translate-klingon")
    assert "feature-extraction" in str(info.value)


def test_task_the_model_type_has_no_class_for():
    with pytest.raises(SourceError, match="has no Transformers class for task 'fill-mask'") as info:
        load_source("tiny:resnet", "fill-mask")
    assert "image-classification" in str(info.value)


def test_unparseable_source():
    with pytest.raises(SourceError):
        load_source("not a model !!")


def test_validate_does_not_run_factory_code_named_by_the_manifest(factory_module, tmp_path):
    """The manifest is not signed: validate runs a factory source only when the user names it."""
    from tracefuse import api
    from tracefuse.errors import TracefuseError

    out = tmp_path / "custom"
    assert api.export(f"{factory_module}:make", out).report["passed"]
    with pytest.raises(TracefuseError, match="does not run code named by an artifact's manifest") as info:
        api.validate(out)
    assert f"--reference {factory_module}:make" in str(info.value)
    assert api.validate(out, reference=f"{factory_module}:make")["passed"]
