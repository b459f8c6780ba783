"""LLM text data for stages 2-3: captions (stage 2) or instruction QA (stage 3) around the media."""

from __future__ import annotations

from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from datamodules.common import build_corpus, prepare_embedded_llm, prepare_synthetic, train_loader
from videochat2.data.collators import ConversationCollator
from videochat2.data.formats import load_caption_records, load_instruction_records
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling
from videochat2.models.llm import load_tokenizer
from videochat2.models.tokenizers import load_qformer_tokenizer

LOADERS = {"caption": load_caption_records, "instruction": load_instruction_records}


class ConversationDataModule(LightningDataModule):
    def __init__(
        self,
        config: DictConfig,
        llm: DictConfig,
        llm_tokenizer: str,
        qformer_tokenizer: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if config.task not in LOADERS:
            raise ValueError(f"data.task must be one of {sorted(LOADERS)} for stages 2-3, got {config.task!r}")
        self.config = config
        self.llm = llm
        self.llm_tokenizer = llm_tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.seed = seed

    def prepare_data(self) -> None:
        prepare_synthetic(self.config)
        prepare_embedded_llm(self.config, self.llm)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        self.collate = ConversationCollator(
            load_tokenizer(self.llm_tokenizer),
            instantiate(self.llm).conversation_template,
            cfg.max_txt_len,
            load_qformer_tokenizer(self.qformer_tokenizer) if self.qformer_tokenizer else None,
            cfg.qformer_max_txt_len,
        )
        self.train_set = MediaDataset(
            build_corpus(cfg.corpora[cfg.task], LOADERS[cfg.task]),
            FrameSampling(cfg.num_frames, cfg.sample),
            FrameTransform(cfg.image_size, "train", cfg.normalization, cfg.crop_scale, cfg.hflip),
        )

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, self.collate, self.config, self.seed, self.trainer)
