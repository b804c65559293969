"""tiny: per-stage lists of flags are cut with the stages, the stem's own lists are kept, and a backbone's
tuple of feature maps becomes named outputs."""

from __future__ import annotations

import torch

from tracefuse import api
from tracefuse.exporters.tiny import tiny_config
from tracefuse.exporters.tiny_stages import stage_kwargs
from tracefuse.exporters.wrapper import _named_tensors


class _Config:
    def __init__(self):
        self.depths = (3, 4, 6, 3)
        self.stage_downsample = (False, True, True, True)
        self.stage_in_channels = (48, 128, 512, 1024)
        self.stage_out_channels = (128, 512, 1024, 2048)
        self.stem_channels = (3, 32, 48)  # as long as the stage transitions, but the stem's own layers


def test_flag_lists_are_cut_with_the_stages_and_the_stem_is_kept():
    kwargs = stage_kwargs(_Config(), hidden=32)
    assert kwargs["depths"] == [1, 1]
    assert kwargs["stage_downsample"] == [False, True]
    assert "stem_channels" not in kwargs  # kept whole
    # the stem feeds stage 1 at its width, so stage widths are cut, not scaled
    assert kwargs["stage_in_channels"] == [48, 128] and kwargs["stage_out_channels"] == [128, 512]


def test_feature_maps_of_a_backbone_become_outputs():
    maps = (torch.zeros(1, 2), torch.ones(1, 3))
    named = _named_tensors({"feature_maps": maps})
    assert [name for name, _ in named] == ["feature_maps_0", "feature_maps_1"]
    # an output with tensors of its own keeps only those (tuples such as hidden_states stay out)
    assert [n for n, _ in _named_tensors({"last_hidden_state": maps[0], "hidden_states": maps})] == [
        "last_hidden_state"]


def test_hgnet_v2_backbone_validates_at_two_shapes(tmp_path):
    config = tiny_config("hgnet_v2")
    assert len(config.stage_downsample) == len(config.depths) == 2
    result = api.export("tiny:hgnet_v2", tmp_path / "hgnet", task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) == 2
    assert [o.name for o in result.artifact.manifest.outputs][:1] == ["feature_maps_0"]


def test_a_layered_backbone_keeps_one_layer_per_feature_map_it_outputs():
    from tracefuse.exporters.tiny_stages import backbone_output_kwargs

    class _Backbone:
        def __init__(self, indices):
            self.num_hidden_layers = 12
            self.out_features = [f"stage{i}" for i in indices]
            self.out_indices = list(indices)

    changes = backbone_output_kwargs(_Backbone([3, 6, 9, 12]), {"num_hidden_layers": 2})
    assert changes == {"out_features": ["stage1", "stage2", "stage3", "stage4"], "out_indices": [1, 2, 3, 4],
                       "num_hidden_layers": 4}
    assert backbone_output_kwargs(_Backbone([12]), {"num_hidden_layers": 2}) == {
        "out_features": ["stage2"], "out_indices": [2]}  # the last layer, as before the shrink


def test_a_detector_with_a_vit_backbone_builds():
    config = tiny_config("tipsv2_dpt")  # four feature levels from a ViT; raised "must be a subset of stage_names"
    backbone = config.backbone_config
    assert backbone.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert backbone.num_hidden_layers == 4


def test_layers_per_block_are_cut_to_one():
    config = tiny_config("funnel")  # its layer count is derived: the sum of block_sizes
    assert config.block_sizes == [1] * len(config.block_sizes)
