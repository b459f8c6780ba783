"""Mixing: weighted proportions, the shared media-type order across ranks, and exact mid-epoch resume."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from datamodules.common import Mix, ResumableDataModule, build_corpus, check_drawn
from videochat2.data.formats import MediaRecord
from videochat2.data.mixing import MediaTypeBatchSampler

# Three corpora: 100 videos, 300 videos, 600 images.
SIZES = (100, 300, 600)
TYPES = ["video"] * 400 + ["image"] * 600
CORPUS = [0] * 100 + [1] * 300 + [2] * 600


def steps(sampler: MediaTypeBatchSampler, count: int) -> list[list[int]]:
    """`count` batches across as many epochs as it takes."""
    out, epoch = [], 0
    while len(out) < count:
        sampler.set_epoch(epoch)
        out.extend(sampler)
        epoch += 1
    return out[:count]


@pytest.mark.parametrize(("weights", "expected"), [(None, (0.1, 0.3, 0.6)), ((2.0, 1.0, 1.0), (0.5, 0.25, 0.25))])
def test_corpus_shares_follow_weights_over_1000_steps(weights, expected):
    sampler = MediaTypeBatchSampler(TYPES, 8, seed=1, corpus_ids=CORPUS, weights=weights)
    batches = steps(sampler, 1000)
    counts = Counter(CORPUS[i] for batch in batches for i in batch)
    total = sum(counts.values())
    for corpus, share in enumerate(expected):
        assert counts[corpus] / total == pytest.approx(share, abs=0.02)
    assert all(len({TYPES[i] for i in batch}) == 1 for batch in batches)
    # the epoch keeps the data's length whatever the weights (less a partial batch per media type)
    assert 1000 // 8 - 2 <= len(sampler) <= 1000 // 8


def test_upweighted_small_corpus_repeats_its_samples_in_fresh_orders():
    sampler = MediaTypeBatchSampler(TYPES, 8, seed=0, corpus_ids=CORPUS, weights=(5.0, 1.0, 4.0))
    drawn = [i for batch in sampler for i in batch if CORPUS[i] == 0]
    assert len(drawn) == pytest.approx(500, abs=8) and set(drawn) == set(range(100))


def test_two_ranks_share_the_type_order_and_read_disjoint_shards():
    ranks = [MediaTypeBatchSampler(TYPES, 4, seed=3, rank=r, world_size=2, corpus_ids=CORPUS) for r in range(2)]
    plans = [steps(sampler, 300) for sampler in ranks]
    assert [TYPES[b[0]] for b in plans[0]] == [TYPES[b[0]] for b in plans[1]]
    first_epoch = len(ranks[0])
    seen = [{i for batch in plan[:first_epoch] for i in batch} for plan in plans]
    assert not seen[0] & seen[1]
    for corpus in range(3):
        assert {i for i in seen[0] | seen[1] if CORPUS[i] == corpus} == {i for i, c in enumerate(CORPUS) if c == corpus}


def test_weighted_ranks_stay_in_step():
    ranks = [
        MediaTypeBatchSampler(TYPES, 4, seed=5, rank=r, world_size=3, corpus_ids=CORPUS, weights=(3, 1, 1))
        for r in range(3)
    ]
    orders = [[TYPES[b[0]] for b in steps(s, 200)] for s in ranks]
    assert orders[0] == orders[1] == orders[2]


def test_sampler_resumes_mid_epoch_with_the_same_batches():
    reference = MediaTypeBatchSampler(TYPES, 8, seed=7, corpus_ids=CORPUS, weights=(1, 1, 2))
    reference.set_epoch(2)
    expected = list(reference)
    interrupted = MediaTypeBatchSampler(TYPES, 8, seed=7, corpus_ids=CORPUS, weights=(1, 1, 2))
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(17)]
    state = interrupted.state_dict()
    assert state["epoch"] == 2 and state["position"] == 17
    resumed = MediaTypeBatchSampler(TYPES, 8, seed=7, corpus_ids=CORPUS, weights=(1, 1, 2))
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what Lightning does at the start of the resumed epoch
    assert head + list(resumed) == expected
    resumed.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(resumed)) == len(resumed)
    with pytest.raises(ValueError, match="batch_size was 8 when saved, now 4"):
        MediaTypeBatchSampler(TYPES, 4, seed=7, corpus_ids=CORPUS).load_state_dict(state)


class IndexDataset(Dataset):
    def __len__(self) -> int:
        return 60

    def __getitem__(self, index: int) -> int:
        return index


def collate(indices: list[int]) -> dict:
    return {"idx": torch.tensor(indices)}


class IndexData(ResumableDataModule):
    def __init__(self, num_workers: int) -> None:
        super().__init__()
        records = [MediaRecord(f"{i}.mp4", "video" if i < 36 else "image") for i in range(60)]
        self.mix = Mix(records, [0] * 36 + [1] * 24, None)
        self.config = SimpleNamespace(batch_size=3, num_workers=num_workers)

    def train_dataloader(self):
        return self.training_loader(IndexDataset(), self.mix, collate, self.config, seed=11)


class Recorder(L.LightningModule):
    """Records the sample indices of every training batch; a scheduler sized by the trainer, as ours are."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["idx"].tolist())
        return (self.weight - 1).pow(2).sum()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        total = self.trainer.estimated_stepping_batches
        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)]


def fit(tmp_path, max_steps: int, num_workers: int, ckpt_path: str | None = None, save_every: int | None = None):
    module = Recorder()
    callbacks = []
    if save_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=save_every, save_last=True))
    trainer = L.Trainer(
        max_steps=max_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(save_every),
        accelerator="cpu",
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=IndexData(num_workers), ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_fit_resumes_mid_epoch_with_the_batches_of_an_uninterrupted_run(tmp_path, num_workers):
    # 20 batches per epoch: stop at step 27 (mid second epoch), resume to step 45 (mid third epoch)
    uninterrupted = fit(tmp_path / "a", 45, num_workers)
    head = fit(tmp_path / "b", 27, num_workers, save_every=27)
    tail = fit(tmp_path / "b", 45, num_workers, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert len(head) == 27 and len(tail) == 18
    assert head + tail == uninterrupted
    assert uninterrupted[:20] != uninterrupted[20:40]  # epochs differ, so the epoch was restored too


def test_a_corpus_smaller_than_one_batch_is_reported_with_its_real_share(caplog):
    """Finding 9: five images beside 100 videos were 'reported at 4.8%' and never drawn."""
    types = ["video"] * 100 + ["image"] * 5
    sampler = MediaTypeBatchSampler(types, 8, corpus_ids=[0] * 100 + [1] * 5)
    assert sampler.drawn_shares() == [1.0, 0.0]
    assert not any(types[i] == "image" for batch in sampler for i in batch)
    mix = Mix([MediaRecord(f"{i}.mp4", t) for i, t in enumerate(types)], [0] * 100 + [1] * 5, None, ["clips", "stills"])
    with caplog.at_level("WARNING"):
        check_drawn(sampler, mix, 8)
    assert "corpus stills is never drawn" in caplog.text and "not 4.8%" in caplog.text


def test_no_full_batch_at_all_is_an_error_naming_the_key():
    sampler = MediaTypeBatchSampler(["video"] * 5, 8)
    mix = Mix([MediaRecord(f"{i}.mp4", "video") for i in range(5)], [0] * 5, None, ["clips"])
    with pytest.raises(ValueError, match="data.batch_size=8: no media type has a full batch"):
        check_drawn(sampler, mix, 8)


def test_an_empty_corpus_is_an_error_naming_its_file(tmp_path):
    """Finding 9: an empty annotation file finished 'successfully' with 0 steps and no checkpoint."""
    annotation = tmp_path / "empty.json"
    annotation.write_text("[]")
    entry = OmegaConf.create(
        {"name": "empty", "annotation": str(annotation), "media_root": str(tmp_path), "media_type": "video"}
    )
    with pytest.raises(ValueError, match=r"data.corpora.caption: every corpus is empty .*empty.json"):
        build_corpus([entry], "caption")
