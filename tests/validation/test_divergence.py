"""`tracefuse debug`: a planted bug in one layer of a real tiny:bert export is traced to its PyTorch module,
a clean export reports no divergence, memory is bounded by chunks, and --bisect-passes names the pass."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from typer.testing import CliRunner

from tests.helpers import rehash
from tracefuse import api_debug, cli
from tracefuse.errors import TracefuseError
from tracefuse.graphs.intermediates import NAME_SCOPES, module_values, with_outputs
from tracefuse.passes.base import FunctionPass, PassResult, register_pass, unregister_pass
from tracefuse.validation import divergence

PLANTED = "model.encoder.layer.1.intermediate.dense"  # the path inside the export wrapper
PLANTED_NAME = "encoder.layer.1.intermediate.dense"  # as the user's model names it


pytestmark = pytest.mark.usefixtures("wide_consoles")  # conftest: keep long messages on one line


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, ["debug", *[str(a) for a in args]])
    return result.exit_code, " ".join(result.output.split())


def plant(model: ir.Model, scope: str, factor: float, *, keep_metadata: bool = True) -> str:
    """Multiply the output of the last node traced in `scope` by `factor`: a Mul inserted after it takes the
    value's name and its readers (as a wrong last op of the module would); with `keep_metadata`, the Mul
    carries the node's module metadata, as if the module itself computed the wrong value. Returns the name."""
    node = [n for n in model.graph if f"'{scope}'" in n.metadata_props.get(NAME_SCOPES, "")][-1]
    value = node.outputs[0]
    name, readers = value.name, list(value.uses())
    value.name = f"{name}__unscaled"
    factor_value = ir.Value(name="planted_factor", const_value=ir.tensor(np.array(factor, dtype=np.float32)))
    model.graph.register_initializer(factor_value)
    mul = ir.node("Mul", [value, factor_value], name="planted_mul")
    model.graph.insert_after(node, mul)
    out = mul.outputs[0]
    out.name, out.dtype, out.shape = name, value.dtype, value.shape
    for reader, index in readers:
        reader.replace_input_with(index, out)
    if keep_metadata:
        mul.metadata_props.update(node.metadata_props)
    return name


@pytest.fixture
def planted(bert_artifact, tmp_path) -> Path:
    """A copy of the tiny:bert artifact whose encoder layer 1 intermediate dense output is scaled by 1.05."""
    art = Path(shutil.copytree(bert_artifact, tmp_path / "planted"))
    model = ir.load(str(art / "model.onnx"))
    assert plant(model, PLANTED, 1.05) == "linear_10"  # tiny:bert's layer 1 intermediate dense
    ir.save(model, str(art / "model.onnx"))
    rehash(art, "model.onnx")  # the numbers, not the hash check, must fail it
    return art


def test_module_values_follow_the_module_tree(bert_artifact):
    model = ir.load(str(bert_artifact / "model.onnx"))
    values = module_values(model)
    names = [v.module for v in values]
    for layer in (0, 1):
        for sub in ("attention", "intermediate.dense", "output", ""):
            assert f"model.encoder.layer.{layer}{'.' + sub if sub else ''}" in names
    # execution order: layer 0 before layer 1, a module after the modules it calls
    assert names.index("model.encoder.layer.0") < names.index("model.encoder.layer.1.attention")
    assert names.index(PLANTED) < names.index("model.encoder.layer.1.intermediate") < names.index(
        "model.encoder.layer.1")
    by_name = {v.module: v.value for v in values}
    assert by_name["model.encoder"] == "last_hidden_state" and by_name["model.pooler"] == "pooler_output"


def test_with_outputs_exposes_values_without_touching_the_model(bert_artifact):
    import onnx
    import onnxruntime as ort

    model = ir.load(str(bert_artifact / "model.onnx"))
    before = [o.name for o in model.graph.outputs]
    data = with_outputs(model, ["layer_norm", "last_hidden_state"])
    assert [o.name for o in model.graph.outputs] == before and len(model.graph) == 128
    assert [o.name for o in ort.InferenceSession(data).get_outputs()] == ["last_hidden_state", "layer_norm"]
    # pruned to what the values need: the pooler is not computed, the embeddings' LayerNorm alone even less
    assert len(onnx.load_from_string(data).graph.node) < 128
    early = onnx.load_from_string(with_outputs(model, ["layer_norm"]))
    assert [o.name for o in early.graph.output] == ["layer_norm"] and len(early.graph.node) <= 12
    with pytest.raises(KeyError, match="no_such_value"):
        with_outputs(model, ["no_such_value"])


def test_planted_bug_is_traced_to_its_module(planted, tmp_path):
    code, text = invoke(planted, "--json", tmp_path / "d.json")
    assert code == 1, text
    assert f"first divergent module: {PLANTED_NAME} " in text
    report = json.loads((tmp_path / "d.json").read_text())
    first = report["first_divergent"]
    assert first["module"] == PLANTED_NAME and first["value"] == "linear_10"
    # 5% of the dense output: the relative error is 0.05 wherever the reference is not tiny
    assert first["max_rel"] == pytest.approx(0.05, rel=0.05)
    compared = [m for m in report["modules"] if "skipped" not in m]
    index = compared.index(first)
    assert index > 20 and all(m["passed"] for m in compared[:index])  # layer 0 and layer 1's attention agree
    assert [p["module"] for p in report["path"]] == [
        PLANTED_NAME, "encoder.layer.1.intermediate", "encoder.layer.1", "encoder", "(model)"]
    assert not report["path"][1]["passed"] and not report["path"][2]["passed"]
    assert "error growth (max abs): encoder.layer.1.intermediate.dense" in text


def test_a_node_without_metadata_shows_in_the_module_that_reads_it(bert_artifact, monkeypatch):
    """A node a pass inserted belongs to no module: the dense's own output is then only a part of the value its
    readers see, so the dense is left out, and the activation reading the wrong value is named."""
    model = ir.load(str(bert_artifact / "model.onnx"))
    plant(model, PLANTED, 1.05, keep_metadata=False)
    monkeypatch.setattr("tracefuse.graphs.onnx_file.load_onnx", lambda _path: model)
    calls: list[int] = []
    run_values = divergence.run_values

    def counting(data, feeds, names, **kwargs):
        calls.append(len(names))
        return run_values(data, feeds, names, **kwargs)

    monkeypatch.setattr(divergence, "run_values", counting)
    report = api_debug.debug(bert_artifact, chunk=7)
    assert report["first_divergent"]["module"] == "encoder.layer.1.intermediate.intermediate_act_fn"
    assert PLANTED_NAME not in [m["module"] for m in report["modules"]]
    assert next(m for m in report["modules"] if m["module"] == "encoder.layer.1.attention")["passed"]
    # bounded memory: at most `chunk` values exposed per ONNX Runtime run, one run per chunk
    assert calls and max(calls) <= 7
    assert len(calls) == report["chunks"] == math.ceil((report["compared"] + report["skipped"]) / 7)


def test_clean_artifact_has_no_divergence(bert_artifact, tmp_path):
    code, text = invoke(bert_artifact, "--json", tmp_path / "d.json", "--depth", "3")
    assert code == 0, text
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["passed"] and report["first_divergent"] is None and report["compared"] >= 30
    assert f"all {report['compared']} modules within tolerance" in text
    assert "deeper modules not shown" in text


def test_wrong_reference_and_not_an_artifact_are_usage_errors(bert_artifact, tmp_path):
    code, text = invoke(bert_artifact, "--reference", "tiny:gpt2")
    assert code == 2 and "lacks" in text and "it is another model" in text and "--reference" in text, text
    assert "Traceback" not in text
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an artifact")
    code, text = invoke(tmp_path / "junk")
    assert code == 2 and "has no manifest.json" in text and "tracefuse export -o" in text, text
    code, text = invoke(bert_artifact, "--base", bert_artifact)
    assert code == 2 and "--base is only read by --bisect-passes" in text, text


def _scale_dense(model: ir.Model, *, explain: bool = False) -> PassResult:
    return PassResult(model, {"perturbed": plant(model, PLANTED, 1.05)})


@pytest.fixture
def scale_pass():
    register_pass("test-scale-dense", lambda: FunctionPass("test-scale-dense", _scale_dense), "test only")
    yield "test-scale-dense"
    unregister_pass("test-scale-dense")


def test_bisect_passes_names_the_pass_and_the_module(bert_artifact, scale_pass, tmp_path):
    from tracefuse.api_passes import optimize

    optimized = tmp_path / "optimized"
    optimize(bert_artifact, optimized, passes=["cleanup", scale_pass], validate=False)
    code, text = invoke(optimized, "--bisect-passes", "--base", optimized)
    assert code == 2 and "is not the artifact the passes were applied to" in text, text
    code, text = invoke(optimized, "--bisect-passes", "--base", bert_artifact, "--json", tmp_path / "d.json")
    assert code == 1, text
    assert f"first pass past tolerance: {scale_pass}" in text
    report = json.loads((tmp_path / "d.json").read_text())
    steps = report["bisect_passes"]["steps"]
    assert [s["name"] for s in steps] == ["cleanup", scale_pass]
    assert steps[0]["check"]["passed"] and not steps[1]["check"]["passed"]
    assert report["first_divergent"]["module"] == PLANTED_NAME  # cleanup kept the module names


def test_bisect_passes_without_base_reexports_the_reference(bert_artifact, scale_pass, tmp_path):
    from tracefuse.api_passes import optimize

    optimized = tmp_path / "optimized"
    optimize(bert_artifact, optimized, passes=[scale_pass, "cleanup"], validate=False)
    result = api_debug.bisect_passes(optimized)
    assert result["failed_pass"] == scale_pass and result["base"] is None
    assert [s["name"] for s in result["steps"]] == [scale_pass]  # the check stops at the failing pass
    assert any("fresh export" in note for note in result["notes"])
    with pytest.raises(TracefuseError, match="records no passes"):
        api_debug.bisect_passes(bert_artifact)


def test_graphs_past_the_protobuf_limit_go_through_external_data(bert_artifact, monkeypatch):
    """Past 2 GiB of weights a model cannot be serialized in memory: each chunk is saved with external data
    (forced here by a zero threshold) and read back by ONNX Runtime from the file."""
    saved: list[str] = []
    with_outputs_ = divergence.with_outputs

    def spy(model, names, path=None):
        result = with_outputs_(model, names, path)
        saved.append(sorted(p.name for p in Path(path).parent.iterdir()) if path else [])
        return result

    monkeypatch.setattr(divergence, "EXTERNAL_DATA_THRESHOLD", 0)
    monkeypatch.setattr("tracefuse.graphs.onnx_file.EXTERNAL_DATA_THRESHOLD", 0)
    monkeypatch.setattr(divergence, "with_outputs", spy)
    report = api_debug.debug(bert_artifact, chunk=100)
    assert saved == [["model.onnx", "model.onnx.data"]]
    assert report["passed"] and report["chunks"] == 1 and report["compared"] == len(report["modules"]) >= 30
