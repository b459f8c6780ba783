"""Caption data for stages 1-2: homogeneous image/video batches, retrieval split for validation."""

from __future__ import annotations

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from datamodules.common import ResumableDataModule, build_corpus, load_entry, prepare_embedded
from videochat2.data.collators import CaptionCollator
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling
from videochat2.models.tokenizers import load_qformer_tokenizer
from videochat2.spec import ModelSpec


class CaptionDataModule(ResumableDataModule):
    def __init__(self, data: DictConfig, spec: ModelSpec, seed: int = 0) -> None:
        super().__init__()
        self.config = data
        self.tokenizer_path = spec.qformer_tokenizer
        self.seed = seed

    def prepare_data(self) -> None:
        prepare_embedded(self.config)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        self.collate = CaptionCollator(load_qformer_tokenizer(self.tokenizer_path), cfg.max_txt_len)
        self.mix = build_corpus(cfg.corpora.caption, "caption")
        self.train_set = MediaDataset(
            self.mix.records,
            FrameSampling(cfg.num_frames, cfg.sample),
            FrameTransform(cfg.image_size, "train", cfg.normalization, cfg.crop_scale, cfg.hflip),
            read_timeout_s=cfg.read_timeout_s,
        )
        self.val_set = MediaDataset(
            load_entry(cfg.corpora.retrieval, "retrieval"),
            FrameSampling(cfg.num_frames, cfg.sample_test),
            FrameTransform(cfg.image_size, "test", cfg.normalization),
            read_timeout_s=cfg.read_timeout_s,
        )

    def train_dataloader(self) -> DataLoader:
        return self.training_loader(self.train_set, self.mix, self.collate, self.config, self.seed)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.config.batch_size,
            num_workers=self.config.num_workers,
            collate_fn=self.collate,
        )
