"""Naming a model's outputs: nested tower outputs, and outputs that share an input's name."""

from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutput

from tracefuse.exporters.wrapper import FlatWrapper, _named_tensors, probe_outputs


class _EchoMask(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        return {"last_hidden_state": input_ids.float().unsqueeze(-1) * 2, "attention_mask": attention_mask[:, ::2]}


def test_an_output_named_like_an_input_is_renamed_everywhere():
    model = _EchoMask()
    feeds_a = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    feeds_b = {"input_ids": torch.ones(2, 6, dtype=torch.long), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    names = ("input_ids", "attention_mask")
    specs = probe_outputs(model, names, feeds_a, {"batch": 1, "sequence": 4}, feeds_b, {"batch": 2, "sequence": 6})
    assert [s.name for s in specs] == ["last_hidden_state", "attention_mask_output"]
    wrapper = FlatWrapper(model, names, tuple(s.name for s in specs))
    hidden, mask = wrapper(feeds_a["input_ids"], feeds_a["attention_mask"])
    assert mask.shape == (1, 2) and hidden.shape == (1, 4, 1)


def test_tower_outputs_are_named_by_tower():
    out = {"vision_outputs": BaseModelOutput(last_hidden_state=torch.zeros(1, 2)),
           "qformer_outputs": BaseModelOutput(last_hidden_state=torch.ones(1, 3))}
    assert [n for n, _ in _named_tensors(out)] == ["vision_outputs.last_hidden_state",
                                                   "qformer_outputs.last_hidden_state"]
