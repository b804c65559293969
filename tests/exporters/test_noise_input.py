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


def test_an_input_the_traced_graph_never_reads_stays_an_input_of_the_artifact(tmp_path):
    # hiera takes noise but masks no patch in inference: the TorchScript exporter drops the input, and the
    # artifact keeps it (unused) so that it takes what its spec names
    result = api.export("tiny:hiera", tmp_path / "hiera", exporter="torchscript")
    assert result.report is not None and result.report["passed"], result.report
    graph = onnx.load(str(result.artifact.graph_path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["pixel_values", "noise"]
    assert not any("noise" in node.input for node in graph.node)


def test_restoring_unused_inputs_keeps_the_spec_order_and_leaves_complete_graphs_alone():
    import io

    import numpy as np
    import onnx_ir as ir
    import onnxruntime as ort
    import torch

    from tracefuse.artifact import TensorSpec
    from tracefuse.exporters.onnx_exporter import restore_unused_inputs

    class UsesSecond(torch.nn.Module):
        def forward(self, first, second):
            return second * 2

    buffer = io.BytesIO()
    torch.onnx.export(UsesSecond(), (torch.zeros(2, 3), torch.ones(2, 3)), buffer, dynamo=False,
                      input_names=["first", "second"], dynamic_axes={"second": {0: "batch"}})
    model = ir.from_proto(onnx.load_from_string(buffer.getvalue()))
    assert [v.name for v in model.graph.inputs] == ["second"]  # the exporter dropped the unused one
    specs = (TensorSpec("first", "float32", ("batch", 3), {}), TensorSpec("second", "float32", ("batch", 3), {}))
    restore_unused_inputs(model, specs)
    assert [v.name for v in model.graph.inputs] == ["first", "second"]
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    out = session.run(None, {"first": np.zeros((4, 3), np.float32), "second": np.ones((4, 3), np.float32)})[0]
    np.testing.assert_array_equal(out, np.full((4, 3), 2, np.float32))
    restore_unused_inputs(model, specs)  # nothing missing: unchanged
    assert [v.name for v in model.graph.inputs] == ["first", "second"]
