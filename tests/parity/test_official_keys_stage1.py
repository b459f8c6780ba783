"""The real-size stage-1 model has exactly the official checkpoint's keys and shapes (built on meta)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig

MANIFEST = Path(__file__).parents[1] / "data" / "official_keys" / "stage1_umt_l16_qformer.tsv"


def read_manifest() -> list[dict]:
    with MANIFEST.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def shape_of(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("x")) if text else ()


def build_meta() -> VideoChat2Alignment:
    with torch.device("meta"):
        return VideoChat2Alignment(AlignmentConfig(), VisionConfig.umt_l16(), QFormerConfig.bert_base())


def test_keys_and_shapes_match_the_official_manifest():
    rows = read_manifest()
    model = build_meta()
    state = model.state_dict()
    assert [r["key"] for r in rows if r["key"] not in state] == []
    assert sorted(set(state) - {r["key"] for r in rows}) == []
    for row in rows:
        assert tuple(state[row["key"]].shape) == shape_of(row["shape"]), row["key"]
        assert str(state[row["key"]].dtype).removeprefix("torch.") == row["dtype"], row["key"]


def test_tied_aliases_and_buffers():
    model = build_meta()
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers())
    for row in read_manifest():
        kind = row["kind"]
        if kind.startswith("alias:"):
            assert params[row["key"]] is params[kind.removeprefix("alias:")], row["key"]
        elif kind == "buffer":
            assert row["key"] in buffers
        else:
            assert row["key"] in params


def test_trainable_flags_follow_stage_one():
    model = build_meta()
    params = dict(model.named_parameters(remove_duplicate=False))
    for row in read_manifest():
        if row["kind"] != "buffer":
            assert params[row["key"]].requires_grad == (row["requires_grad"] == "true"), row["key"]
