"""Scale-out pieces that run on a CPU: trainer presets, FSDP units, activation checkpointing, 8-bit AdamW, QLoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.unit.test_configs import compose_train
from videochat2.fsdp import checkpoint_policy, is_decoder_layer, wrap_policy
from videochat2.models.llm import LLMConfig, build_llm


@pytest.mark.parametrize(
    "preset, precision, devices",
    [
        ("cpu", "32-true", 1),
        ("ddp_cpu", "32-true", 2),
        ("gpu", "bf16-mixed", 1),
        ("ddp", "bf16-mixed", 4),
        ("fsdp", "bf16-mixed", 4),
    ],
)
def test_trainer_presets_and_their_precision(preset, precision, devices):
    cfg = compose_train([f"trainer={preset}"])
    assert (cfg.trainer.precision, cfg.trainer.devices) == (precision, devices)
    changed = compose_train([f"trainer={preset}", "precision=16-mixed", "trainer.accumulate_grad_batches=4"])
    assert changed.trainer.precision == "16-mixed" and changed.trainer.accumulate_grad_batches == 4


def test_paper_recipe_keeps_its_precision_on_the_fsdp_preset():
    cfg = compose_train(["experiment=videochat2_vicuna7b_stage3", "trainer=fsdp", "trainer.devices=8"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 8 and cfg.stage == 3


def test_fsdp_preset_builds_a_sharded_strategy_with_the_policies():
    strategy = instantiate(compose_train(["trainer=fsdp"]).trainer.strategy)
    assert type(strategy).__name__ == "FSDPStrategy"
    assert strategy._state_dict_type == "sharded"
    assert strategy.kwargs["use_orig_params"] is True
    assert callable(strategy.kwargs["auto_wrap_policy"])
    assert callable(strategy._activation_checkpointing_kwargs["auto_wrap_policy"])


def tiny_llama_dir(tmp_path: Path) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "llm")
    return tmp_path / "llm"


def llm_from(path: Path, dirs: dict[str, Path], **options):
    """build_llm on a local directory (its tokenizer, unused here, comes from the small synthetic set)."""
    config = LLMConfig(preset="local", path=str(path), **options)
    return build_llm(config, dirs["data"] / "synthetic" / "tokenizers" / "llm")[0]


class Wrapped(nn.Module):
    """The shape of VideoChat2 for wrapping: a frozen encoder, trainable query tokens and projection, an LLM."""

    def __init__(self, llm: nn.Module) -> None:
        super().__init__()
        self.vision = nn.Linear(8, 8).requires_grad_(False)
        self.query_tokens = nn.Parameter(torch.zeros(1, 4, 8))
        self.llm_proj = nn.Linear(8, 64)
        self.llm = llm


def fsdp_units(model: nn.Module, policy) -> dict[str, list[nn.Parameter]]:
    """Parameters per FSDP unit, as torch's recursive wrapping assigns them (nearest wrapped ancestor)."""
    wrapped = {name for name, module in model.named_modules() if name and policy(module, False, 0)}
    units: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")[:-1]
        owner = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in wrapped), "")
        units.setdefault(owner, []).append(param)
    return units


def test_fsdp_units_never_mix_frozen_bf16_weights_with_trainable_ones(tmp_path, dirs):
    model = Wrapped(llm_from(tiny_llama_dir(tmp_path), dirs, dtype="bfloat16", lora=True))
    policy = wrap_policy()
    wrapped = [type(m).__name__ for m in model.modules() if policy(m, False, 0)]
    assert wrapped.count("LlamaDecoderLayer") == 2
    assert "Linear" in wrapped  # the LoRA matrices and the projection
    units = fsdp_units(model, policy)
    for owner, params in units.items():
        assert len({p.requires_grad for p in params}) == 1 or owner == "", owner
        assert len({p.dtype for p in params}) == 1, owner
    lora_units = [o for o in units if "lora_A" in o or "lora_B" in o]
    assert lora_units and all(p.requires_grad and p.dtype == torch.float32 for o in lora_units for p in units[o])
    assert all(not p.requires_grad for o, ps in units.items() if "layers." in o and "lora_" not in o for p in ps)
    # Only decoder layers are recomputed in the backward pass.
    recomputed = {type(m).__name__ for m in model.modules() if checkpoint_policy()(m, False, 0)}
    assert recomputed == {"LlamaDecoderLayer"}


def test_vit_checkpointing_of_the_first_blocks_gives_the_same_loss_and_gradients():
    from videochat2.models.vision import VisionConfig, VisionTransformer

    torch.manual_seed(0)
    plain = VisionTransformer(VisionConfig.tiny(drop_path_rate=0.1))
    saving = VisionTransformer(VisionConfig.tiny(drop_path_rate=0.1, checkpoint_num=3))
    saving.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 3, 64, 64)
    losses, grads = [], []
    for model in (plain, saving):
        torch.manual_seed(1)
        loss = model(x).pow(2).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_llm_gradient_checkpointing_keeps_lora_loss_and_gradients(tmp_path, dirs):
    path = tiny_llama_dir(tmp_path)
    ids = torch.randint(0, 96, (2, 12))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        llm = llm_from(path, dirs, lora=True, lora_dropout=0.0, gradient_checkpointing=checkpointing)
        for name, param in llm.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(param, std=0.02)
        llm.train()
        loss = llm(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in llm.named_parameters() if p.requires_grad}))
    (loss0, grads0), (loss1, grads1) = results
    torch.testing.assert_close(loss1, loss0)
    assert grads0 and grads0.keys() == grads1.keys()
    for name in grads0:
        assert grads1[name] is not None and grads1[name].abs().sum() > 0, name
        torch.testing.assert_close(grads1[name], grads0[name], msg=name)


def test_adamw8bit_keeps_8bit_state_for_large_tensors_and_trains():
    from lightning_modules.optimization import configure_optimizers

    factory = instantiate(compose_train(["optimizer=adamw8bit", "optimizer.lr=1e-2"]).optimizer)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))  # 16384 > min_8bit_size
    optimizer = configure_optimizers(model, factory, None, (), total_steps=40)
    assert type(optimizer).__name__ == "AdamW8bit"
    x = torch.randn(256, 128)
    y = x[:, :1] - x[:, 1:2]
    losses = []
    for _ in range(40):
        loss = (model(x) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    big, small = model[0].weight, model[0].bias
    assert optimizer.state[big]["state1"].dtype == torch.uint8
    assert optimizer.state[small]["state1"].dtype == torch.float32
    # The state survives a weights-only checkpoint round trip (resume).
    path = Path(__file__).parents[2] / ".pytest_adamw8bit.pt"
    try:
        torch.save(optimizer.state_dict(), path)
        restored = configure_optimizers(model, factory, None, (), total_steps=40)
        restored.load_state_dict(torch.load(path, weights_only=True))
    finally:
        path.unlink(missing_ok=True)
    assert torch.equal(restored.state[big]["state1"], optimizer.state[big]["state1"])


def cpu_4bit_unsupported() -> str | None:
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer = layer.to("cpu")
        layer(torch.randn(1, 64, dtype=torch.bfloat16))
    except Exception as err:  # any failure means this build cannot run 4-bit layers here
        return f"bitsandbytes cannot run 4-bit layers on this CPU: {type(err).__name__}: {err}"
    return None


def test_qlora_nf4_loads_double_quantised_bf16_storage_and_trains_lora(tmp_path, dirs):
    reason = cpu_4bit_unsupported()
    if reason:
        pytest.skip(reason)
    import bitsandbytes as bnb

    llm = llm_from(tiny_llama_dir(tmp_path), dirs, dtype="bfloat16", quantization="nf4", lora=True, lora_dropout=0.0)
    layers = [m for m in llm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers
    state = layers[0].weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # double quantisation
    assert layers[0].weight.dtype == torch.bfloat16 and layers[0].compute_dtype == torch.bfloat16
    trainable = [p for p in llm.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(0, 96, (4, 16))
    losses = []
    for _ in range(15):
        loss = llm(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def checkpointed_decoder_layers(model: nn.Module) -> nn.Module:
    """What FSDP's `activation_checkpointing_policy` does: each decoder layer recomputed in the backward pass."""
    from functools import partial

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    wrapper = partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper, check_fn=is_decoder_layer)
    return model


def padded_stage3_batch() -> dict:
    """Two samples of different lengths: the padding gives the LLM a real attention mask, as in training."""
    torch.manual_seed(1)
    return {
        "pixel_values": torch.randn(2, 2, 3, 32, 32),
        "input_ids_before": [torch.tensor([1, 5, 6, 7]), torch.tensor([1, 8])],
        "input_ids_after": [torch.tensor([9, 10, 11]), torch.tensor([12, 13])],
        "labels_after": [torch.tensor([-100, 10, 11]), torch.tensor([-100, 13])],
    }


def test_checkpointed_decoder_layers_give_the_same_loss_and_gradients_without_the_kv_cache():
    """The recompute of a checkpointed layer would append its keys to the KV cache a second time: with the
    cache on, the padded batch fails in the backward pass (as `trainer=fsdp` did); the training forward
    turns the cache off and gets the loss and gradients of the run without checkpointing."""
    from copy import deepcopy

    from tests.unit.test_device import tiny_videochat2

    plain = tiny_videochat2().train()
    plain.llm.requires_grad_(False)
    checkpointed = deepcopy(plain)
    checkpointed_decoder_layers(checkpointed.llm)
    assert sum("checkpoint_wrapped" in name for name, _ in checkpointed.llm.named_modules()) > 0
    batch = padded_stage3_batch()

    inputs = checkpointed.build_inputs(
        checkpointed.encode_visual(batch["pixel_values"]), batch["input_ids_before"], batch["input_ids_after"]
    )
    with pytest.raises(RuntimeError, match="must match the size"):
        checkpointed.llm(**inputs, use_cache=True).logits.square().mean().backward()
    checkpointed.zero_grad()

    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(2)  # the same dropout masks in both runs (the recompute replays its RNG state)
        loss = model(**batch)["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys() and any(n.startswith("llm_proj") for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], msg=name)
