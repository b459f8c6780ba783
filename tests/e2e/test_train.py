"""The documented training commands, run for real on a small synthetic set (a few steps each)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script, train_overrides
from videochat2.checkpoints import read_state_dict
from videochat2.loader import load_model

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow


def train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, check=check)


def losses(run_dir: Path) -> list[float]:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def test_stage1_leaves_the_documented_run_directory(chained_run):
    run_dir = chained_run / "stage1"
    for name in ("config.yaml", "checkpoints/last.ckpt", "metrics.csv", "summary.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 3
    for key in ("wall_time_s", "samples_per_s", "peak_memory_mb", "skipped_media"):
        assert key in summary
    assert {"train/loss", "train/loss_vtc", "train/loss_vtm", "train/loss_vtg"} <= set(summary["metrics"])
    assert "val/r1_t2v" in summary["metrics"]
    assert len(losses(run_dir)) == 3


def test_a_finished_run_is_not_trained_again(dirs, chained_run):
    before = (chained_run / "stage1" / "summary.json").read_text()
    result = train(*train_overrides(dirs))
    assert "already finished" in result.stdout + result.stderr
    assert (chained_run / "stage1" / "summary.json").read_text() == before


def test_stage_checkpoints_hold_only_trainable_tensors(chained_run):
    stage2 = read_state_dict(chained_run / "stage2" / "checkpoints" / "last.ckpt")
    stage3 = read_state_dict(chained_run / "stage3" / "checkpoints" / "last.ckpt")
    assert not [k for k in stage2 if k.startswith("model.llm.")]
    assert stage2["model.extra_query_tokens"].shape[1] == 64 - 32
    assert not [k for k in stage3 if k.startswith("model.llm.") and "lora_" not in k]
    assert [k for k in stage3 if "lora_A" in k]
    # Stage 2 reads no instruction, so the Q-Former text path is frozen and left out.
    assert "model.qformer.bert.embeddings.word_embeddings.weight" not in stage2
    assert "model.qformer.bert.embeddings.word_embeddings.weight" in stage3


def test_stage3_trains_the_bridge_at_the_scaled_rate(chained_run):
    """The embedded stage 3 runs the projection and LoRA at model.lr_scale (20x) the rate of the rest."""
    checkpoint = torch.load(chained_run / "stage3" / "checkpoints" / "last.ckpt", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    base = min(g["initial_lr"] for g in groups)
    scaled = [g for g in groups if g["initial_lr"] != base]
    assert base == pytest.approx(5e-4) and scaled
    assert all(g["initial_lr"] == pytest.approx(20 * base) for g in scaled)
    bridge = [
        k
        for k in read_state_dict(chained_run / "stage3" / "checkpoints" / "last.ckpt")
        if "lora_" in k or k.startswith("model.llm_proj.")
    ]
    assert sum(len(g["params"]) for g in scaled) == len(bridge) > 0


def test_a_scale_for_an_unknown_component_is_refused(dirs, chained_run):
    result = train(
        "stage=3",
        "+model.lr_scale.projection=2",
        "model.init_from=none",
        *train_overrides(dirs, run="unknown_scale"),
        check=False,
    )
    assert result.returncode != 0
    assert "unknown components in model.lr_scale: ['projection']" in result.stderr


def test_stage3_training_keeps_the_base_llm_bitwise(chained_run, tmp_path):
    """Two stage-3 steps in-process: LoRA moves, every base LLM weight stays bit for bit."""
    from hydra.utils import instantiate
    from lightning.pytorch import Trainer
    from omegaconf import OmegaConf

    from datamodules.conversation import ConversationDataModule
    from lightning_modules import VideoChat2Module
    from videochat2.run_layout import locate

    cfg = OmegaConf.load(chained_run / "stage3" / "config.yaml")
    spec, init = locate(chained_run / "stage3").read_spec()
    assert init == [chained_run / f"stage{k}" / "checkpoints" / "last.ckpt" for k in (1, 2)]
    module = VideoChat2Module(spec, list(cfg.model.trainable), instantiate(cfg.optimizer), init_from=init)
    before = {k: v.clone() for k, v in module.model.llm.state_dict().items()}
    datamodule = ConversationDataModule(cfg.data, spec, cfg.seed)
    trainer = Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule)
    after = module.model.llm.state_dict()
    lora = [k for k in before if "lora_B" in k]
    assert lora and any(not torch.equal(before[k], after[k]) for k in lora)
    base = [k for k in before if "lora_" not in k]
    assert base and all(torch.equal(before[k], after[k]) for k in base)


def test_stage3_model_answers_in_the_trained_format(chained_run, dirs):
    """Greedy generation after the benchmark's `Best option:(` gives `X) text`, the form the data teaches."""
    import re

    from videochat2.data.conversation import build_choice_conversation
    from videochat2.data.formats import MultipleChoice
    from videochat2.data.transforms import FrameTransform
    from videochat2.data.video import FrameSampling, read_media

    loaded = load_model(chained_run / "stage3")
    model, tokenizer, media = loaded.model, loaded.llm_tokenizer, loaded.spec.media
    data = dirs["data"] / "synthetic"
    item = json.loads((data / "annotations" / "instruction_video_mc.json").read_text())[0]
    choice = MultipleChoice(item["question"], tuple(item["candidates"]), item["answer"])
    before, after, _ = build_choice_conversation(choice, "vicuna_v0").split()
    after = after[: after.rindex("Best option:(") + len("Best option:(")]
    frames = read_media(data / "videos" / item["video"], "video", FrameSampling(media.num_frames, "middle"))
    ids = model.generate(
        FrameTransform(media.image_size, "test")(frames)[None],
        [torch.tensor([tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False)["input_ids"])],
        [torch.tensor(tokenizer(after, add_special_tokens=False)["input_ids"])],
        max_new_tokens=8,
    )
    answer = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    assert re.match(r"[A-E]\) \w", answer), answer


def test_an_ablation_sweep_runs(dirs, chained_run):
    train("-m", "experiment=ablation_lora", *train_overrides(dirs, steps=1))
    for job in (0, 1):
        assert json.loads((chained_run / "stage3" / "ablation_lora" / str(job) / "summary.json").read_text())[
            "finished"
        ]


def test_a_run_directory_holding_another_configuration_is_refused(dirs, chained_run):
    result = train("stage=3", "model.num_query=32", *train_overrides(dirs), check=False)
    assert result.returncode != 0
    assert "holds a run with another configuration (model.num_query: 96 there, 32 now)" in result.stderr


def test_missing_previous_stage_is_a_one_line_hint(dirs):
    result = train("stage=2", *train_overrides(dirs, run="nothing_before"), check=False)
    assert result.returncode != 0
    assert "python train.py stage=1 run_name=nothing_before" in result.stderr


def test_num_query_sweep_writes_separate_directories(dirs, chained_run):
    from omegaconf import OmegaConf

    train("-m", "stage=3", "model.num_query=32,96", *train_overrides(dirs, steps=1))
    for job, value in enumerate((32, 96)):
        job_dir = chained_run / "stage3" / str(job)
        assert json.loads((job_dir / "summary.json").read_text())["finished"]
        assert OmegaConf.load(job_dir / "config.yaml").model.num_query == value


def test_short_stage1_run_lowers_the_loss(dirs):
    train(*train_overrides(dirs, run="learn", steps=24), "data.batch_size=8", "optimizer.lr=2e-3")
    values = losses(dirs["out"] / "learn" / "stage1")
    tenth = max(1, len(values) // 5)
    assert sum(values[-tenth:]) / tenth < 0.8 * sum(values[:tenth]) / tenth, values


def test_raising_max_steps_trains_a_finished_run_further(dirs):
    """`python train.py trainer.max_steps=<more>` on a finished run continues from its last checkpoint."""
    from omegaconf import OmegaConf

    run_dir = dirs["out"] / "longer" / "stage1"
    train(*train_overrides(dirs, run="longer", steps=3))
    first_rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    result = train(*train_overrides(dirs, run="longer", steps=6))
    assert f"training {run_dir} further: from step 3 to 6" in result.stdout + result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and (summary["steps"], summary["max_steps"]) == (6, 6)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert len(losses(run_dir)) == 6  # steps 0-2 once, then 3-5: the count continues, nothing is retrained
    assert (run_dir / "metrics.csv").read_text().splitlines()[1 : 1 + len(first_rows)] == first_rows
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.trainer.max_steps == 6 and saved.trainer.val_check_interval == 6

    again = train(*train_overrides(dirs, run="longer", steps=6))
    assert "already finished" in again.stdout + again.stderr
    shorter = train(*train_overrides(dirs, run="longer", steps=4), check=False)
    assert shorter.returncode != 0
    assert f"train.py: error: trainer.max_steps=4: {run_dir} holds a run trained towards 6 steps" in shorter.stderr


def test_a_start_that_fails_in_set_up_leaves_no_config_and_the_corrected_command_runs(dirs, tmp_path):
    """A malformed annotation file stops set-up inside fit; the run directory must not keep that config."""
    bad = tmp_path / "pretrain_video.json"
    bad.write_text("[{not json")
    run_dir = dirs["out"] / "bad_start" / "stage1"
    args = train_overrides(dirs, run="bad_start", steps=2)
    failed = train(*args, f"data.corpora.caption.0.annotation={bad}", check=False)
    assert failed.returncode != 0 and "is not valid JSON" in failed.stderr
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
    train(*args)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
