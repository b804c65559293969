"""Every model type of the foundation slice exports to ONNX and validates at two shapes with named axes.

The full matrix (8 text types x 5 tasks + 3 vision types x 2 tasks = 46 exports) takes about 4 minutes on
a quiet 2-core machine, too long for `make test`. By default every model type is exported at
feature-extraction, and every other task on at least one text and one vision model (16 exports).
Set TRACEFUSE_FULL_MATRIX=1 to run all 46.
"""

from __future__ import annotations

import os

import onnx
import pytest

from tracefuse import api

TEXT_TYPES = ("bert", "roberta", "distilbert", "albert", "electra", "deberta-v2", "xlm-roberta", "mpnet")
TEXT_TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering", "fill-mask")
VISION_TYPES = ("vit", "resnet", "convnext")
VISION_TASKS = ("feature-extraction", "image-classification")
DYNAMIC_IMAGE = ("resnet", "convnext")  # CNNs: any image size; ViT has fixed position embeddings

# The outputs users expect per task, and the named axes of each (None: a fixed size, not checked here).
EXPECTED_OUTPUTS = {
    "text-classification": {"logits": ("batch", None)},
    "token-classification": {"logits": ("batch", "sequence", None)},
    "question-answering": {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")},
    "fill-mask": {"logits": ("batch", "sequence", None)},
    "image-classification": {"logits": ("batch", None)},
}

_DEFAULT_TASK_CASES = [
    ("roberta", "text-classification"),
    ("distilbert", "token-classification"),
    ("deberta-v2", "question-answering"),
    ("mpnet", "fill-mask"),
    ("resnet", "image-classification"),
]

if os.environ.get("TRACEFUSE_FULL_MATRIX") == "1":
    CASES = [(m, t) for m in TEXT_TYPES for t in TEXT_TASKS] + [(m, t) for m in VISION_TYPES for t in VISION_TASKS]
else:
    CASES = [(m, "feature-extraction") for m in TEXT_TYPES + VISION_TYPES] + _DEFAULT_TASK_CASES


def _graph_dims(value_info) -> tuple:
    """The dims of an ONNX graph input/output: dim_param names for symbolic dims, ints for fixed ones."""
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _check_export(result, model_type: str, task: str, exporter: str = "dynamo") -> None:
    report, manifest = result.report, result.artifact.manifest
    assert report is not None and report["passed"], report
    assert manifest.task == task and manifest.export["model_type"] == model_type
    assert manifest.export["exporter"] == exporter
    assert manifest.validation is not None and manifest.validation["passed"]

    # Two generated cases at different shapes, every output of the manifest compared in each.
    cases = report["cases"]
    assert len(cases) >= 2
    shapes = [{name: tuple(shape) for name, shape in c["inputs"].items()} for c in cases]
    main_input = "pixel_values" if model_type in VISION_TYPES else "input_ids"
    a, b = shapes[0][main_input], shapes[1][main_input]
    assert a[0] != b[0], f"batch not varied: {a} vs {b}"
    if model_type in VISION_TYPES:
        if model_type in DYNAMIC_IMAGE:
            assert a[2] != b[2] and a[3] != b[3], f"height/width not varied: {a} vs {b}"
    else:
        assert a[1] != b[1], f"sequence not varied: {a} vs {b}"
    output_names = [o.name for o in manifest.outputs]
    for case in cases:
        assert [o["name"] for o in case["outputs"]] == output_names
        assert all(o["passed"] and o["max_abs"] <= report["tolerance"]["atol"] + 1e-2 for o in case["outputs"])
        assert all(o["cosine"] > 0.999 for o in case["outputs"])

    # Named dynamic axes, in the manifest and in the ONNX graph itself.
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    graph_inputs = {v.name: _graph_dims(v) for v in graph.input}
    graph_outputs = {v.name: _graph_dims(v) for v in graph.output}
    assert list(graph_inputs) == [s.name for s in manifest.inputs]
    assert list(graph_outputs) == output_names
    for spec in manifest.inputs:
        if model_type in VISION_TYPES:
            expected = ("batch", 3, "height", "width") if model_type in DYNAMIC_IMAGE else ("batch", 3)
            assert spec.shape[: len(expected)] == expected, spec
        else:
            assert spec.shape == ("batch", "sequence"), spec
        assert graph_inputs[spec.name] == spec.shape
    for spec in manifest.outputs:
        assert spec.shape[0] == "batch", spec
        assert graph_outputs[spec.name][0] == "batch"
    if task == "feature-extraction":
        assert output_names[0] in ("last_hidden_state", "pooler_output")
        if model_type not in VISION_TYPES:
            assert manifest.outputs[0].shape[:2] == ("batch", "sequence")
    else:
        for name, axes in EXPECTED_OUTPUTS[task].items():
            assert name in output_names, f"{name} missing from {output_names}"
            shape = manifest.outputs[output_names.index(name)].shape
            assert len(shape) == len(axes)
            assert all(want is None or want == got for want, got in zip(axes, shape, strict=True)), shape


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_export_and_validate(model_type, task, tmp_path):
    result = api.export(f"tiny:{model_type}", tmp_path / "art", task=task)
    _check_export(result, model_type, task)


@pytest.mark.slow
def test_torchscript_exporter(tmp_path):
    result = api.export("tiny:electra", tmp_path / "art", task="token-classification", exporter="torchscript")
    _check_export(result, "electra", "token-classification", exporter="torchscript")
