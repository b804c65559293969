"""The CLI: export / validate / run / inspect, exit codes 0 pass, 1 numerical mismatch, 2 bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from tests.helpers import rehash, save_tiny_checkpoint
from tracefuse import cli

CORE_COMMANDS = ("export", "validate", "run", "inspect")
TRACEFUSE = Path(sys.executable).with_name("tracefuse")


pytestmark = pytest.mark.usefixtures("wide_consoles")  # conftest: keep long messages on one line


def invoke(*args: str):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_usage_error(result, *needles: str) -> None:
    """Exit 2 with an `error:` message that contains every needle."""
    text = flat(result.output)
    assert result.exit_code == 2, text
    assert "error:" in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in: {text}"
    assert "Traceback" not in text


@pytest.fixture
def art(bert_artifact, tmp_path) -> Path:
    """A private copy of the session's tiny:bert artifact that a test may damage."""
    return Path(shutil.copytree(bert_artifact, tmp_path / "art"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


def feeds_for(artifact: Path, batch: int = 2, seq: int = 7) -> dict[str, np.ndarray]:
    inputs = json.loads((artifact / "manifest.json").read_text())["inputs"]
    rng = np.random.default_rng(3)
    return {i["name"]: (rng.integers(0, 100, size=(batch, seq)) if i["name"] == "input_ids"
                        else np.ones((batch, seq))).astype(np.int64) for i in inputs}


# --- help ---------------------------------------------------------------------------------------------


def test_help_for_every_command():
    commands = get_command(cli.app).commands
    assert set(CORE_COMMANDS) <= set(commands)
    top = invoke("--help")
    assert top.exit_code == 0
    for name in commands:
        assert name in top.output
        result = invoke(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output and name in result.output


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage:" in result.output and "export" in result.output


# --- the happy path -----------------------------------------------------------------------------------


def test_export_then_validate_json(tmp_path):
    out = tmp_path / "bert"
    exported = invoke("export", "tiny:bert", "-o", out, "--no-validate")
    assert exported.exit_code == 0, exported.output
    assert (out / "manifest.json").is_file() and (out / "model.onnx").is_file()
    assert json.loads((out / "manifest.json").read_text())["validation"] is None

    report_path = tmp_path / "r.json"
    result = invoke("validate", out, "--json", report_path)
    assert result.exit_code == 0, result.output
    assert "validation passed" in result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    shapes = [c["inputs"]["input_ids"] for c in report["cases"]]
    assert len(shapes) == 2 and shapes[0] != shapes[1]
    assert shapes[0][0] != shapes[1][0] and shapes[0][1] != shapes[1][1]  # batch and sequence both vary


def test_validate_with_user_inputs_adds_a_case(bert_artifact, tmp_path):
    np.savez(tmp_path / "in.npz", **feeds_for(bert_artifact, batch=4, seq=11))
    result = invoke("validate", bert_artifact, "--inputs", tmp_path / "in.npz", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [c["name"] for c in report["cases"]][-1] == "file:in.npz"
    assert report["cases"][-1]["inputs"]["input_ids"] == [4, 11] and report["passed"] is True


def test_checkpoint_reference_defaults_to_recorded_path_and_can_be_overridden(checkpoint, tmp_path):
    out = tmp_path / "art"
    assert invoke("export", checkpoint, "-o", out, "--no-validate").exit_code == 0
    default = invoke("validate", out, "--json", tmp_path / "r.json")
    assert default.exit_code == 0, default.output
    assert json.loads((tmp_path / "r.json").read_text())["reference_source"] == str(checkpoint.resolve())
    # the same architecture with other weights: every output differs, exit 1
    other = save_tiny_checkpoint(tmp_path / "other", seed=8)
    result = invoke("validate", out, "--reference", other)
    assert result.exit_code == 1, result.output
    assert "validation failed" in result.output and "last_hidden_state" in flat(result.output)


def test_console_script_exit_codes(bert_artifact, tmp_path):
    """The installed console script in its own process (cheap commands that need no torch): exit 0 and 2."""
    ok = subprocess.run([str(TRACEFUSE), "inspect", str(bert_artifact), "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["manifest"]["format"] == "onnx"
    bad = subprocess.run([str(TRACEFUSE), "validate", str(tmp_path / "nope")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert bad.returncode == 2
    assert "error:" in bad.stderr and "no artifact at" in bad.stderr and "Traceback" not in bad.stderr


def test_export_refuses_non_empty_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    result = invoke("export", "tiny:bert", "-o", out, "--no-validate")
    assert_usage_error(result, "not empty", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


@pytest.mark.parametrize("where", ["itself", "its parent"])
def test_export_refuses_to_write_over_its_own_checkpoint(checkpoint, tmp_path, where):
    ckpt = Path(shutil.copytree(checkpoint, tmp_path / "models" / "ckpt"))
    before = sorted(p.name for p in ckpt.iterdir())
    out = ckpt if where == "itself" else ckpt.parent
    result = invoke("export", ckpt, "-o", out, "--overwrite", "--no-validate")
    assert_usage_error(result, "holds the model being exported")
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_run_writes_npz(bert_artifact, tmp_path):
    from tracefuse.exporters.sources import load_source

    feeds = feeds_for(bert_artifact)
    np.savez(tmp_path / "in.npz", **feeds)
    result = invoke("run", bert_artifact, "--inputs", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert result.exit_code == 0, result.output
    manifest = json.loads((bert_artifact / "manifest.json").read_text())
    with np.load(tmp_path / "out.npz") as data:
        outputs = {k: data[k] for k in data.files}
    assert list(outputs) == [o["name"] for o in manifest["outputs"]]
    # Independent reference: the same tiny model in PyTorch, called by keyword.
    model = load_source("tiny:bert").module
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    assert outputs["last_hidden_state"].shape == expected.shape == (2, 7, 32)
    np.testing.assert_allclose(outputs["last_hidden_state"], expected, atol=1e-4)


def test_inspect_table_and_json(bert_artifact):
    table = invoke("inspect", bert_artifact)
    assert table.exit_code == 0, table.output
    for needle in ("input_ids", "[batch, sequence]", "[batch, sequence, 32]", "last_hidden_state", "op histogram",
                   "MatMul", "last validation: passed"):
        assert needle in table.output

    result = invoke("inspect", bert_artifact, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["manifest"]["format"] == "onnx" and info["manifest"]["task"] == "feature-extraction"
    sizes = sum(p.stat().st_size for p in bert_artifact.iterdir() if p.name != "manifest.json")
    assert info["size_bytes"] == sizes
    proto = onnx.load(str(bert_artifact / "model.onnx"))
    assert info["graph"]["nodes"] == len(proto.graph.node)
    assert info["graph"]["ops"]["MatMul"] == sum(n.op_type == "MatMul" for n in proto.graph.node)


# --- a graph that computes something else: exit 1, the output named ------------------------------------


def _scale_output(path: Path, output: str, factor: float) -> None:
    """Make the graph compute `output * factor` instead of `output` (a valid graph, wrong numbers)."""
    model = onnx.load(str(path))
    graph = model.graph
    inner = f"{output}__unscaled"
    for node in graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
        node.input[:] = [inner if i == output else i for i in node.input]
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(factor, dtype=np.float32), "tf_test_factor"))
    graph.node.append(onnx.helper.make_node("Mul", [inner, "tf_test_factor"], [output]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_validate_fails_with_exit_1_naming_the_output(art, tmp_path):
    _scale_output(art / "model.onnx", "last_hidden_state", 1.01)
    rehash(art, "model.onnx")  # so that the numbers, not the hash check, fail it
    result = invoke("validate", art, "--json", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "validation failed" in text and "last_hidden_state" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False
    for case in report["cases"]:
        verdict = {o["name"]: o["passed"] for o in case["outputs"]}
        assert verdict["last_hidden_state"] is False
        assert all(ok for name, ok in verdict.items() if name != "last_hidden_state")


# --- bad input: exit 2 and a message naming the problem ---------------------------------------------


def test_export_nonexistent_path(tmp_path):
    result = invoke("export", tmp_path / "no" / "such", "-o", tmp_path / "out")
    assert_usage_error(result, "does not exist")
    assert not (tmp_path / "out").exists()


def test_export_dir_without_config(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"x")
    result = invoke("export", tmp_path / "ckpt", "-o", tmp_path / "out")
    assert_usage_error(result, "no config.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_export_bad_safetensors(checkpoint, tmp_path, damage):
    ckpt = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(os.urandom(len(data)) if damage == "corrupt" else data[: len(data) // 2])
    result = invoke("export", ckpt, "-o", tmp_path / "out")
    assert_usage_error(result, "model.safetensors is corrupt or truncated")
    assert not (tmp_path / "out").exists()


def test_export_unknown_model_type(tmp_path):
    result = invoke("export", "tiny:no-such-type", "-o", tmp_path / "out")
    assert_usage_error(result, "unknown model type 'no-such-type'")


def test_export_unknown_task(tmp_path):
    result = invoke("export", "tiny:bert", "--task", "no-such-task", "-o", tmp_path / "out")
    assert_usage_error(result, "unknown task 'no-such-task'", "feature-extraction")


def test_export_unknown_format_and_exporter(tmp_path):
    assert_usage_error(invoke("export", "tiny:bert", "--format", "nope", "-o", tmp_path / "a"), "unknown format")
    assert_usage_error(invoke("export", "tiny:bert", "--exporter", "nope", "-o", tmp_path / "b"), "unknown exporter")
    assert not (tmp_path / "b").exists()


def test_tampered_graph_caught_by_hash(art):
    with (art / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    for command in ("validate", "inspect"):
        assert_usage_error(invoke(command, art), "modified after it was written", "model.onnx")


def test_manifest_hash_mismatch(art):
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert_usage_error(invoke("validate", art), "does not match the sha256")


@pytest.mark.parametrize("content", ["truncated", "not-onnx"])
def test_bad_model_onnx_caught_by_loader(art, tmp_path, content):
    graph = art / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 3] if content == "truncated" else b"this is not an ONNX model\n" * 10)
    rehash(art, "model.onnx")  # the hash matches, so the ONNX loader must be what refuses it
    np.savez(tmp_path / "in.npz", **feeds_for(art))
    assert_usage_error(invoke("inspect", art), "model.onnx is not a readable ONNX model")
    for result in (invoke("validate", art),
                   invoke("run", art, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "o.npz")):
        assert_usage_error(result, "model.onnx")
        # either the ONNX reader or ONNX Runtime refuses it, never the hash check
        assert "not a readable ONNX model" in flat(result.output) or "cannot load" in flat(result.output)
        assert "sha256" not in result.output
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("name", ["run[abc]", "run[/abc]"])
def test_paths_with_brackets_are_printed_not_parsed_as_markup(tmp_path, name):
    missing = tmp_path / name / "art"
    assert_usage_error(invoke("validate", missing), f"no artifact at {missing}")


def test_validate_unknown_runtime_and_bad_threads(bert_artifact):
    assert_usage_error(invoke("validate", bert_artifact, "--runtime", "no-such-runtime"),
                       "unknown runtime 'no-such-runtime'", "ort-cpu")
    result = invoke("validate", bert_artifact, "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output  # click's own usage error


def test_validate_missing_artifact(tmp_path):
    assert_usage_error(invoke("validate", tmp_path / "nope"), "no artifact at")


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda f: f.update(input_idz=f.pop("input_ids")),
         ("do not match", "unexpected: input_idz", "missing: input_ids")),
        (lambda f: f.update(input_ids=f["input_ids"].astype(np.int32)), ("'input_ids' has the wrong dtype", "int32")),
        (lambda f: f.update(input_ids=f["input_ids"].astype(np.float32)), ("'input_ids' has the wrong dtype",)),
        (lambda f: f.update(attention_mask=f["attention_mask"][0]), ("'attention_mask' has the wrong rank",)),
        (lambda f: f.update(input_ids=f["input_ids"][:, :, None]), ("'input_ids' has the wrong rank",)),
        (lambda f: f.update(attention_mask=f["attention_mask"][:, :3]), ("axis 'sequence' has different sizes",)),
    ],
    ids=["name", "dtype-int32", "dtype-float", "rank-low", "rank-high", "mismatched-axis"],
)
def test_run_bad_feeds(bert_artifact, tmp_path, change, needles):
    feeds = feeds_for(bert_artifact)
    change(feeds)
    np.savez(tmp_path / "in.npz", **feeds)
    result = invoke("run", bert_artifact, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "o.npz")
    assert_usage_error(result, *needles)
    assert not (tmp_path / "o.npz").exists()


def test_run_unreadable_inputs(bert_artifact, tmp_path):
    assert_usage_error(invoke("run", bert_artifact, "--inputs", tmp_path / "none.npz", "-o", tmp_path / "o.npz"),
                       "does not exist")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert_usage_error(invoke("run", bert_artifact, "--inputs", tmp_path / "bad.npz", "-o", tmp_path / "o.npz"),
                       "not a readable .npz")
