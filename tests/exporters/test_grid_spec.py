"""Packed-patch vision encoders (qwen2-VL family towers): flattened patches, grid_thw and the grid-derived
helpers as graph inputs, consistent at every shape, exported and validated at two grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracefuse import api
from tracefuse.artifact import TensorSpec
from tracefuse.errors import TracefuseError
from tracefuse.exporters.grid_spec import takes_grid
from tracefuse.validation.inputs import generate_inputs


def test_grid_inputs_follow_the_sizes():
    merge = {"spatial_merge_size": 2}
    specs = [TensorSpec("grid_thw", "int64", (1, 3), {"kind": "grid_thw"}),
             TensorSpec("cu_seqlens", "int32", (2,), {"kind": "grid_cu_seqlens", "params": merge}),
             TensorSpec("position_ids", "int64", ("patches", 2), {"kind": "grid_position_ids", "params": merge})]
    feeds = generate_inputs(specs, {"grid_h": 2, "grid_w": 4, "patches": 8})
    assert feeds["grid_thw"].tolist() == [[1, 2, 4]]
    assert feeds["cu_seqlens"].tolist() == [0, 8]  # one image: one attention segment of all its patches
    rows = {tuple(p) for p in feeds["position_ids"].tolist()}
    assert rows == {(h, w) for h in range(2) for w in range(4)}  # every patch position once
    assert feeds["position_ids"][:4].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]  # 2x2 merge blocks first
    with pytest.raises(TracefuseError, match="shape"):  # sizes that disagree with the grid are refused
        generate_inputs(specs, {"grid_h": 2, "grid_w": 4, "patches": 9})


def test_a_plain_vision_model_is_not_a_grid_encoder():
    class Vit(torch.nn.Module):
        def forward(self, pixel_values, output_hidden_states=None):
            return pixel_values

    class Tower(torch.nn.Module):
        def forward(self, hidden_states, grid_thw, **kwargs):
            return hidden_states

    assert not takes_grid(Vit()) and takes_grid(Tower())


def test_qwen3_vl_vision_tower_exports_and_validates_at_two_grids(tmp_path):
    result = api.export("tiny:qwen3_vl_vision", tmp_path / "tower", validate=True)
    assert result.report["passed"], result.report
    cases = [c["name"] for c in result.report["cases"]]
    assert cases == ["grid_h=4,grid_w=4,patches=16", "grid_h=8,grid_w=12,patches=96"]
    manifest = json.loads((tmp_path / "tower" / "manifest.json").read_text())
    kinds = {i["name"]: i["fill"]["kind"] for i in manifest["inputs"]}
    assert kinds["grid_thw"] == "grid_thw" and kinds["position_ids"] == "grid_position_ids"
    shapes = {i["name"]: i["shape"] for i in manifest["inputs"]}
    assert shapes["hidden_states"][0] == "patches" and shapes["position_ids"] == ["patches", 2]
    out = {c["name"]: c["outputs"][0]["shape"] for c in result.report["cases"]}
    assert out["grid_h=8,grid_w=12,patches=96"][0] == 96 and np.isfinite(result.report["cases"][1]["outputs"][0]
                                                                          ["max_abs"])
