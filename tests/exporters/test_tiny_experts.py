"""tiny: mixture-of-experts configs keep a few experts, routed to fewer per token, in groups their router can
still pick from; the rule reads fields by meaning, so it is tested on made-up fields as well as real configs."""

from __future__ import annotations

from tracefuse.exporters.tiny import FFN, tiny_config
from tracefuse.exporters.tiny_experts import EXPERTS, PER_TOKEN, expert_kwargs


def test_counts_per_token_shared_and_widths_shrink_only_in_a_config_with_many_experts():
    fields = {"num_experts": 64, "num_experts_per_tok": 8, "n_shared_experts": 2, "moe_intermediate_size": 1408,
              "shared_expert_intermediate_size": 5632, "intermediate_size": 64, "num_heads": 16}
    changes = expert_kwargs(fields, FFN)
    assert changes == {"num_experts": EXPERTS, "num_experts_per_tok": PER_TOKEN, "n_shared_experts": 1,
                       "moe_intermediate_size": FFN, "shared_expert_intermediate_size": FFN}
    assert expert_kwargs({"num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 512}, FFN) == {}
    assert expert_kwargs({"intermediate_size": 3072, "vision_intermediate_size": 4096}, FFN) == {}  # dense


def test_expert_groups_divide_the_experts_and_topk_group_stays_within_them():
    changes = expert_kwargs({"n_routed_experts": 256, "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8}, FFN)
    assert changes["n_routed_experts"] == EXPERTS and EXPERTS % changes["n_group"] == 0
    assert changes["topk_group"] <= changes["n_group"]
    assert EXPERTS // changes["n_group"] >= 2  # the router scores a group by its two best experts
    one_group = expert_kwargs({"n_routed_experts": 128, "n_group": 1, "topk_group": 1}, FFN)
    assert "n_group" not in one_group and "topk_group" not in one_group


def test_real_moe_configs_build_small():
    from transformers import AutoConfig

    for model_type, count in (("olmoe", "num_experts"), ("mixtral", "num_local_experts"),
                              ("deepseek_v3", "n_routed_experts"), ("qwen3_next", "num_experts")):
        default, config = AutoConfig.for_model(model_type), tiny_config(model_type)
        assert getattr(default, count) > EXPERTS and getattr(config, count) == EXPERTS, model_type
        assert PER_TOKEN >= config.num_experts_per_tok >= 1, model_type  # a range: 0 or too many fail
    v3 = tiny_config("deepseek_v3")
    assert v3.n_routed_experts % v3.n_group == 0 and v3.topk_group <= v3.n_group
    nested = tiny_config("qwen3_vl_moe").text_config  # a nested text config is shrunk the same way
    assert nested.num_experts == EXPERTS and nested.moe_intermediate_size <= FFN


def test_a_small_moe_validates_at_two_shapes(tmp_path):
    from tracefuse import api

    result = api.export("tiny:olmoe", tmp_path / "olmoe", task="feature-extraction")
    assert result.report is not None and result.report["passed"], result.report
    assert len(result.report["cases"]) >= 2
