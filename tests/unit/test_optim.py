"""Optimizer groups: weight-decay split and per-component learning-rate scales under the cosine schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videochat2.optim import cosine_with_warmup, param_groups


def bridge_model() -> nn.Module:
    model = nn.Module()
    model.encoder = nn.Linear(4, 4)
    model.llm_proj = nn.Linear(4, 4)
    model.frozen = nn.Linear(4, 4).requires_grad_(False)
    return model


def scale_of(name: str) -> float:
    return 20.0 if name.startswith("llm_proj.") else 1.0


def test_without_scales_there_are_exactly_the_two_base_groups():
    groups = param_groups(bridge_model().named_parameters(), 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert all("lr" not in g for g in groups)


def test_a_scaled_component_gets_its_own_decay_split_at_the_scaled_rate():
    model = bridge_model()
    groups = param_groups(model.named_parameters(), 0.05, lr_scale=scale_of, base_lr=1e-3)
    assert [(g["weight_decay"], g.get("lr")) for g in groups] == [(0.05, None), (0.0, None), (0.05, 2e-2), (0.0, 2e-2)]
    assert groups[2]["params"] == [model.llm_proj.weight] and groups[3]["params"] == [model.llm_proj.bias]
    placed = [id(p) for g in groups for p in g["params"]]
    assert sorted(placed) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_a_scale_without_the_base_rate_is_refused():
    with pytest.raises(ValueError, match="needs the base learning rate"):
        param_groups(bridge_model().named_parameters(), 0.05, lr_scale=scale_of)


def test_the_schedule_keeps_the_scaled_groups_in_proportion():
    groups = param_groups(bridge_model().named_parameters(), 0.05, lr_scale=scale_of, base_lr=1e-3)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = cosine_with_warmup(optimizer, total_steps=10, warmup_ratio=0.2)
    seen = set()
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        base, _, scaled, _ = (g["lr"] for g in optimizer.param_groups)
        assert 0 < base <= 1e-3 and scaled == pytest.approx(20 * base)
        seen.add(base)
    assert len(seen) >= 5
