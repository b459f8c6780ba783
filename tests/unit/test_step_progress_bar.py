"""The training bar counts optimizer steps of max_steps across epochs, names the stage and shows the losses."""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import OmegaConf

from lightning_modules.progress import ProgressLog, StepProgressBar
from recipes.train import callbacks
from tests.unit.test_configs import compose_train


class Tiny(L.LightningModule):
    """Two batches an epoch, so a five-step fit crosses three epochs."""

    stage = 3

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, max_steps: int, ckpt_path=None, accumulate: int = 1) -> StepProgressBar:
    bar = StepProgressBar()
    trainer = L.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        callbacks=[bar],
        default_root_dir=tmp_path,
        logger=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), ckpt_path=ckpt_path)
    return bar


def test_bar_counts_steps_of_max_steps_across_epochs(tmp_path):
    bar = fit(tmp_path, 5).train_progress_bar
    assert (bar.n, bar.total) == (5, 5)
    assert bar.desc.startswith("stage 3")
    assert "train/loss" in bar.postfix and "v_num" not in bar.postfix


def test_bar_counts_optimizer_steps_not_batches(tmp_path):
    bar = fit(tmp_path, 3, accumulate=2).train_progress_bar
    assert (bar.n, bar.total) == (3, 3)


def test_resumed_bar_starts_at_the_resumed_step(tmp_path):
    fit(tmp_path, 2)
    last = next((tmp_path / "checkpoints").glob("*.ckpt"))
    bar = fit(tmp_path, 4, ckpt_path=last).train_progress_bar
    assert (bar.initial, bar.n, bar.total) == (2, 4, 4)


def test_the_bar_is_configured_and_left_out_when_the_trainer_disables_it():
    assert compose_train([]).callbacks.progress_bar._target_ == "lightning_modules.progress.StepProgressBar"
    configured = {
        "progress_bar": {"_target_": "lightning_modules.progress.StepProgressBar"},
        "progress_log": {"_target_": "lightning_modules.progress.ProgressLog"},
    }

    def built(enabled: bool) -> list:
        return callbacks(OmegaConf.create({"trainer": {"enable_progress_bar": enabled}, "callbacks": configured}))

    assert [type(c) for c in built(True)] == [StepProgressBar, ProgressLog]
    assert [type(c) for c in built(False)] == [ProgressLog]
