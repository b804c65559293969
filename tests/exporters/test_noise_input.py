"""Masked-image models draw their patch mask from `noise`: it is an input, so both runtimes mask alike."""

from __future__ import annotations

import onnx

from tracefuse import api
from tracefuse.exporters.media_spec import noise_input
from tracefuse.exporters.sources import load_source


def test_vit_mae_takes_its_noise_as_an_input_and_validates(tmp_path):
    # before: every value differed (each runtime drew its own random mask; max abs error 3.5)
    result = api.export("tiny:vit_mae", tmp_path / "vit_mae", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    dims = {i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph.input}
    assert dims["noise"] == ("batch", 4)  # (32 // 16) ** 2 patches


def test_a_model_without_noise_gets_no_noise_input():
    loaded = load_source("tiny:vit")
    assert noise_input(loaded.module, loaded.config) is None
