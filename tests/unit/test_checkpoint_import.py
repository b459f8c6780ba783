"""Importing official checkpoints: key maps checked against the official manifests, safe loading, round trips.

The real files are gigabytes, so the manifests of their keys and shapes stand in for them: each one becomes
a state dict of meta tensors, goes through the same import as `model.init_from=<file>`, and must load into
our real-size model (built on the meta device) with every key accounted for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Phi3Config

from videochat2.checkpoints import (
    BASE_LLM,
    FRESH_LORA,
    FRESH_PROJECTION,
    FRESH_QUERIES,
    FRESH_STAGE1,
    UNUSED_TEXT_PATH,
    CheckpointError,
    describe,
    detect_family,
    detect_stage,
    initialise,
    load_checkpoints,
    read_checkpoint,
    rename,
)
from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.llm import LLMConfig, apply_lora
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

MANIFESTS = Path(__file__).parents[1] / "data" / "official_keys"
PARITY = Path(__file__).parents[1] / "data" / "parity"
DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16}
LLMS = {
    "vicuna7b": (
        "vicuna7b_v0",
        LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
        ),
    ),
    "mistral7b": (
        "mistral7b_instruct_v02",
        MistralConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=32000,
        ),
    ),
    "phi3": (
        "phi3_mini",
        Phi3Config(
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
        ),
    ),
}


def manifest_state(name: str) -> dict[str, torch.Tensor]:
    """The official file's tensors as meta tensors of the recorded shapes and dtypes."""
    with (MANIFESTS / f"{name}.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    shape = lambda text: tuple(int(d) for d in text.split("x")) if text else ()  # noqa: E731
    return {r["key"]: torch.empty(shape(r["shape"]), dtype=DTYPES[r["dtype"]], device="meta") for r in rows}


def meta_videochat2(llm_name: str, stage: int) -> VideoChat2:
    """Our real-size stage-2/3 model for one official LLM, with no weights allocated."""
    preset, llm_config = LLMS[llm_name]
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(llm_config)
        if stage == 3:
            llm = apply_lora(llm, LLMConfig(preset=preset, lora=True))
        config = VideoChat2Config(num_query=96, num_base_query=32, qformer_text_input=stage == 3)
        return VideoChat2(config, VisionConfig.umt_l16(), QFormerConfig.bert_base(), llm)


def meta_alignment() -> VideoChat2Alignment:
    with torch.device("meta"):
        return VideoChat2Alignment(AlignmentConfig(), VisionConfig.umt_l16(), QFormerConfig.bert_base())


def account(model: torch.nn.Module, name: str, always, if_absent):
    state, ignored = rename(manifest_state(name))
    return state, initialise(model, [(name, state)], [*always, *(r for r in if_absent)], ignored)


@pytest.mark.parametrize("llm_name", sorted(LLMS))
@pytest.mark.parametrize("stage", [2, 3])
def test_official_stage2_3_keys_map_onto_our_real_size_model(llm_name, stage):
    name = f"stage{stage}_{llm_name}"
    raw = manifest_state(name)
    model = meta_videochat2(llm_name, stage)
    unused = (UNUSED_TEXT_PATH,) if stage == 2 else ()
    state, report = account(model, name, (BASE_LLM, *unused), ())
    expected = set(model.state_dict())
    assert set(report.loaded) | set(report.allowed_missing) == expected
    assert set(report.loaded) == set(state) - set(report.ignored)
    # The only tensors dropped are the rotary buffers of the vendored LLaMA.
    assert all(k.endswith("rotary_emb.inv_freq") for k in report.ignored)
    assert len(report.ignored) == (32 if llm_name == "vicuna7b" else 0)
    # Only the frozen base LLM (and, in stage 2, the unused Q-Former text path) stays to other sources.
    assert set(report.allowed_missing.values()) == {BASE_LLM.name, *(r.name for r in unused)}
    lora = [k for k in report.loaded if "lora_" in k]
    assert len(lora) == {2: 0, 3: {"vicuna7b": 128, "mistral7b": 450, "phi3": 258}[llm_name]}[stage]
    assert detect_stage(state) == stage and detect_family(raw) == LLMS[llm_name][0]
    shapes = model.state_dict()
    assert all(shapes[k].shape == state[k].shape for k in report.loaded)


def test_official_stage1_file_is_exactly_our_alignment_model():
    model = meta_alignment()
    state, report = account(model, "stage1_umt_l16_qformer", (), ())
    assert set(report.loaded) == set(model.state_dict()) == set(state)
    assert not report.ignored and not report.allowed_missing
    assert detect_stage(state) == 1


def test_official_stage1_file_starts_a_stage2_model():
    model = meta_videochat2("vicuna7b", 2)
    rules = (FRESH_PROJECTION, FRESH_LORA)
    _, report = account(model, "stage1_umt_l16_qformer", (BASE_LLM, FRESH_QUERIES), rules)
    assert set(report.ignored.values()) == {"stage-1 head, not part of stages 2-3"}
    assert {k.split(".")[0] for k in report.ignored} == {
        "vision_proj",
        "text_proj",
        "itm_head",
        "temp",
        "vision_temp_embed",
        "qformer",
    }
    assert {k for k, v in report.allowed_missing.items() if v != BASE_LLM.name} == {
        "llm_proj.weight",
        "llm_proj.bias",
        "extra_query_tokens",
    }


def test_more_queries_than_any_checkpoint_carries_are_named_unless_allowed():
    """The 32 stage-1 queries fill a 96-query model only in part; outside training that is an error."""
    model = meta_videochat2("vicuna7b", 2)
    with pytest.raises(CheckpointError, match="extra_query_tokens"):
        account(model, "stage1_umt_l16_qformer", (BASE_LLM,), (FRESH_PROJECTION, FRESH_LORA))


def test_umt_vision_file_fills_the_vision_encoder_of_stage1():
    """The released file may also hold the last block and the final norm, which VideoChat2 does not use."""
    model = meta_alignment()
    raw = manifest_state("umt_l16_25m_expected")
    raw.update(
        {
            "encoder.blocks.23.mlp.fc1.bias": raw["encoder.blocks.22.mlp.fc1.bias"],
            "encoder.norm.weight": raw["encoder.blocks.22.norm1.weight"],
        }
    )
    state, ignored = rename(raw)
    report = initialise(model, [("l16_25m", state)], [FRESH_STAGE1], ignored)
    assert detect_stage(state) == 0
    assert set(report.loaded) == {k for k in model.state_dict() if k.startswith("vision_encoder.")}
    assert len(report.loaded) == 301
    assert report.ignored == {
        "vision_encoder.encoder.blocks.23.mlp.fc1.bias": "ViT block past the feature layer (return_index)",
        "vision_encoder.encoder.norm.weight": "UMT pretraining module that VideoChat2 removed",
    }


def test_a_missing_or_unknown_key_is_an_error_that_names_it():
    model = meta_videochat2("vicuna7b", 3)
    state, ignored = rename(manifest_state("stage3_vicuna7b"))
    lora_key = next(k for k in state if "lora_A" in k)
    short = {k: v for k, v in state.items() if k != lora_key}
    with pytest.raises(CheckpointError, match=lora_key.replace(".", r"\.")):
        initialise(model, [("short", short)], [BASE_LLM], ignored)
    with pytest.raises(CheckpointError, match="qformer.bert.surprise"):
        initialise(model, [("extra", {**state, "qformer.bert.surprise": state[lora_key]})], [BASE_LLM], ignored)


def test_lora_keys_into_a_model_without_adapters_say_how_to_fix_it():
    model = meta_videochat2("vicuna7b", 2)
    state, ignored = rename(manifest_state("stage3_vicuna7b"))
    with pytest.raises(CheckpointError, match="model.llm.lora=true"):
        initialise(model, [("s3", state)], [BASE_LLM], ignored)


def test_doubly_wrapped_lora_names_map_into_the_one_adapter():
    key = "mistral_model.base_model.model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    renamed, _ = rename({key: torch.zeros(1)})
    assert list(renamed) == ["llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]


class Payload:
    """An arbitrary class: unpickling it would run code from the file."""

    def __reduce__(self):
        return (print, ("side effect",))


def test_a_pickle_with_arbitrary_objects_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"llm_proj.bias": torch.zeros(2)}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint=true"):
        describe(path)
    info, state, _ = describe(path, trust=True)
    assert info.format == "model-dict" and list(state) == ["llm_proj.bias"]


def test_the_config_object_of_official_training_files_is_read_as_a_plain_dict(tmp_path, monkeypatch):
    """The training scripts pickled an EasyDict config beside the weights; that alone must not block loading."""
    import sys
    import types

    module = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for k, v in self.items():
                setattr(self, k, v)

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    module.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", module)
    path = tmp_path / "official.pth"
    torch.save({"model": {"llama_proj.weight": torch.ones(2, 2)}, "config": EasyDict(lr=1e-4), "epoch": 3}, path)
    monkeypatch.delitem(sys.modules, "easydict")
    info, state, _ = describe(path)
    assert (info.format, info.stage, info.family) == ("model-dict", 2, "vicuna7b_v0")
    assert torch.equal(state["llm_proj.weight"], torch.ones(2, 2))


def tiny_stage3(seed: int) -> VideoChat2:
    torch.manual_seed(seed)
    llm = AutoModelForCausalLM.from_config(
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=60)
    )
    llm = apply_lora(llm, LLMConfig(preset="tiny_llama", lora=True, lora_dropout=0.0))
    config = VideoChat2Config(num_query=6, num_base_query=4, qformer_text_input=True)
    vision = VisionConfig.tiny(img_size=32, embed_dim=32, depth=3, num_heads=2)
    qformer = QFormerConfig.tiny(
        vocab_size=50,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        encoder_width=32,
        num_query_tokens=6,
    )
    return VideoChat2(config, vision, qformer, llm).eval()


def official_layout(model: VideoChat2) -> dict[str, torch.Tensor]:
    """What the original stage-3 save rule keeps, under the original Vicuna names (no base-LLM weights)."""
    names = {"llm_proj.": "llama_proj.", "llm.": "llama_model."}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("llm.") and "lora_" not in key:
            continue
        prefix = next((p for p in names if key.startswith(p)), "")
        out[names.get(prefix, "") + key[len(prefix) :]] = value.clone()
    return out


def probe(model: VideoChat2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return model.next_token_logits(
        torch.randn(2, 4, 3, 32, 32, generator=generator),
        [torch.tensor([1, 5, 7]), torch.tensor([1, 9])],
        [torch.tensor([11, 12]), torch.tensor([13, 14, 15])],
        torch.tensor([[2, 7, 3], [2, 8, 3]]),
        torch.ones(2, 3),
    )


@pytest.mark.parametrize("wrapped", [False, True], ids=["flat", "model-dict"])
def test_tiny_model_saved_under_official_names_loads_back_identically(tmp_path, wrapped):
    source = tiny_stage3(0)
    with torch.no_grad():
        for name, param in source.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    path = tmp_path / "videochat2_tiny_stage3.pth"
    torch.save({"model": official_layout(source)} if wrapped else official_layout(source), path)
    # Same base LLM (it comes from its own directory), everything the file holds different.
    target = tiny_stage3(1)
    target.llm.load_state_dict({k: v for k, v in source.llm.state_dict().items() if "lora_" not in k}, strict=False)
    assert not torch.allclose(probe(target), probe(source))
    report = load_checkpoints(target, [path], (BASE_LLM,), (FRESH_PROJECTION, FRESH_LORA))
    assert report.sources[0]["format"] == ("model-dict" if wrapped else "flat")
    assert (report.sources[0]["stage"], report.sources[0]["family"]) == (3, "vicuna7b_v0")
    assert set(report.allowed_missing.values()) == {BASE_LLM.name}
    assert torch.equal(probe(target), probe(source))
    # Loading the same file again maps into the same adapter: no nested wrapping, same outputs.
    load_checkpoints(target, [path], (BASE_LLM,), ())
    assert torch.equal(probe(target), probe(source))


def test_stage1_parity_file_through_init_from_reproduces_the_recorded_outputs():
    from tests.parity.test_stage1_parity import DATA, build_from_record

    record = json.loads((DATA / "outputs.json").read_text())
    model = build_from_record(record).eval()
    report = load_checkpoints(model, [DATA / "official_like.pth"], (), (FRESH_STAGE1,))
    assert report.sources[0]["format"] == "flat" and report.sources[0]["stage"] == 1
    assert not report.allowed_missing and not report.ignored
    out = load_file(DATA / "outputs.safetensors")
    with torch.no_grad():
        losses = model(
            out["in.video"],
            out["in.text_input_ids"],
            out["in.text_attention_mask"],
            out["in.idx"],
            vision_neg_idx=out["vtm_vision_neg_idx"],
            text_neg_idx=out["vtm_text_neg_idx"],
        )
        torch.testing.assert_close(
            model.encode_vision(out["in.video"])[1], out["vision_query_embeds"], atol=1e-5, rtol=0
        )
    for ours, theirs in (("loss_vtc", "loss_vtc"), ("loss_vtm", "loss_vtm"), ("loss_vtg", "loss_cap")):
        torch.testing.assert_close(losses[ours], out[theirs], atol=1e-5, rtol=0)


def test_stage3_parity_file_through_init_from_reproduces_the_recorded_outputs():
    from tests.parity.test_stage3_parity import DATA, build_from_record

    record = json.loads((DATA / "outputs.json").read_text())
    model, _ = build_from_record(record)
    report = load_checkpoints(model.eval(), [DATA / "official_like.pth"], (BASE_LLM,), (FRESH_PROJECTION, FRESH_LORA))
    source = report.sources[0]
    assert (source["format"], source["stage"], source["family"]) == ("model-dict", 3, "vicuna7b_v0")
    assert set(report.allowed_missing.values()) == {BASE_LLM.name}
    assert any("lora_B" in k for k in report.loaded)
    out = load_file(DATA / "outputs.safetensors")
    instruction = out["infer.qformer_input_ids"]
    with torch.no_grad():
        visual = model.encode_visual(out["in.video"][:1], instruction, torch.ones_like(instruction))
        batch = model.build_inputs(visual, [out["infer.seg0_ids"][0]], [out["infer.seg1_ids"][0]], padding_side="left")
        logits = model.llm(**batch).logits
    torch.testing.assert_close(visual, out["infer.img_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, out["infer.logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "family, llm, prompt, filename",
    [
        ("vicuna", "vicuna7b_v0", "vicuna_v0", "videochat2_7b_stage3.pth"),
        ("mistral", "mistral7b_instruct_v02", "mistral_instruct", "videochat2_mistral_7b_stage3.pth"),
    ],
)
def test_official_mvbench_presets_carry_the_official_protocol(family, llm, prompt, filename):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recipes.evaluate import frame_spec
    from recipes.schema import register
    from recipes.train import model_spec
    from videochat2.prompts import build_prompt

    register()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("eval", overrides=[f"eval_recipe=videochat2_{family}7b_mvbench", "paths.pretrained=/ckpt"])
    assert cfg.benchmark.name == "mvbench" and cfg.eval.answerer == "generate" and cfg.eval.max_new_tokens == 100
    assert cfg.model.init_from == f"/ckpt/{filename}" and cfg.model.bos_quirk
    spec = model_spec(cfg)
    assert (spec.llm.preset, spec.llm.lora, spec.vision.embed_dim, spec.qformer.hidden_size) == (llm, True, 1024, 768)
    assert spec.videochat2.num_query == 96 and spec.videochat2.qformer_text_input
    frames = frame_spec(cfg, None)
    assert (frames.num_frames, frames.image_size, frames.mode, frames.normalization) == (16, 224, "official", "clip")
    assert cfg.eval.prompt == prompt
    assert build_prompt("Q?", ["a", "b"], prompt).text.endswith("Best option:(")
    assert (
        OmegaConf.to_container(cfg.model, resolve=False)["qformer_tokenizer"] == "${paths.pretrained}/bert-base-uncased"
    )


def test_init_from_takes_a_list_of_official_files_in_order():
    """The official stage-2 file lacks the Q-Former text path stage 3 reads: the stage-1 file goes first."""
    from tests.unit.test_configs import compose_train
    from videochat2.run_layout import RunLayout, init_chain

    cfg = compose_train(["stage=3", "model.init_from=[/ckpt/umt_l16_qformer.pth,/ckpt/s2.pth]"])
    stage_dir = RunLayout(Path("outputs"), "r").stage(3)
    assert init_chain(list(cfg.model.init_from), stage_dir) == [Path("/ckpt/umt_l16_qformer.pth"), Path("/ckpt/s2.pth")]


def test_an_official_stage3_file_describes_the_model_chat_and_export_build():
    from videochat2.loader import resolve_source
    from videochat2.spec import OFFICIAL_MEDIA

    spec, chain = resolve_source(PARITY / "stage3_vicuna" / "official_like.pth", pretrained_root="/ckpt")
    assert (spec.stage, spec.llm.preset, spec.llm.lora, spec.videochat2.qformer_text_input) == (
        3,
        "vicuna7b_v0",
        True,
        True,
    )
    assert (spec.vision.embed_dim, spec.qformer.hidden_size, spec.videochat2.num_query) == (1024, 768, 96)
    assert spec.qformer_tokenizer == "/ckpt/bert-base-uncased" and spec.media == OFFICIAL_MEDIA
    assert chain == [PARITY / "stage3_vicuna" / "official_like.pth"]
    stage1, _ = resolve_source(PARITY / "stage1" / "official_like.pth", pretrained_root="/ckpt")
    assert stage1.stage == 1 and stage1.alignment.embed_dim == 768


def test_a_sharded_fsdp_checkpoint_directory_reads_as_the_plain_lightning_file(tmp_path):
    """`trainer=fsdp` saves `last.ckpt/` as torch.distributed.checkpoint shards (model and optimizer states);
    evaluation, chat and export read its model tensors as they read a plain `last.ckpt`."""
    import warnings

    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    module_state = {"model.llm_proj.weight": torch.randn(4, 3), "model.query_tokens": torch.randn(1, 2, 3)}
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": module_state, "global_step": 3}, plain)
    sharded = tmp_path / "last.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dcp warns that no process group exists: this is one process
        dcp.save(
            {"model": module_state, "optimizer_0": {"state": {"0": {"exp_avg": torch.ones(4, 3)}}}},
            checkpoint_id=sharded,
        )
    torch.save({"global_step": 3}, sharded / "meta.pt")
    tensors, kind = read_checkpoint(sharded)
    assert kind == "lightning" and tensors.keys() == module_state.keys()
    for key, value in module_state.items():
        assert torch.equal(tensors[key], value)
    assert describe(sharded)[1].keys() == describe(plain)[1].keys()
