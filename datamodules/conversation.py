"""LLM text data for stages 2-3: captions (stage 2) or instruction QA (stage 3) around the media."""

from __future__ import annotations

from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from datamodules.common import ResumableDataModule, build_corpus, prepare_embedded
from videochat2.data.collators import ConversationCollator
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling
from videochat2.models.llm import llm_tokenizer_dir, load_tokenizer
from videochat2.models.tokenizers import load_qformer_tokenizer
from videochat2.spec import ModelSpec

TASKS = ("caption", "instruction")


def conversation_collator(
    data: DictConfig,
    llm_tokenizer: PreTrainedTokenizerBase,
    template: str,
    qformer_tokenizer: PreTrainedTokenizerBase | None = None,
) -> ConversationCollator:
    """The collator the data config asks for; the paper recipes set the original's text handling here."""
    return ConversationCollator(
        llm_tokenizer,
        template,
        data.max_txt_len,
        qformer_tokenizer,
        data.qformer_max_txt_len,
        shuffle_options=data.shuffle_options,
        caption_prompt_set=data.get("caption_prompts", "ours"),
        caption_padding_side=data.get("caption_padding_side"),
        caption_mask_pad_id=data.get("caption_mask_pad_id", True),
        qformer_padding_side=data.get("qformer_padding_side"),
        time_message=data.get("time_message", False),
    )


class ConversationDataModule(ResumableDataModule):
    def __init__(self, data: DictConfig, spec: ModelSpec, seed: int = 0) -> None:
        super().__init__()
        if data.task not in TASKS:
            raise ValueError(f"data.task must be one of {TASKS} for stages 2-3, got {data.task!r}")
        self.config = data
        self.spec = spec
        self.seed = seed

    def prepare_data(self) -> None:
        prepare_embedded(self.config, self.spec.llm)

    def setup(self, stage: str | None = None) -> None:
        cfg, spec = self.config, self.spec
        self.collate = conversation_collator(
            cfg,
            load_tokenizer(llm_tokenizer_dir(spec.llm, spec.llm_tokenizer, spec.pretrained_root)),
            spec.llm.conversation_template,
            load_qformer_tokenizer(spec.qformer_tokenizer) if spec.videochat2.qformer_text_input else None,
        )
        self.mix = build_corpus(cfg.corpora[cfg.task], cfg.task)
        self.train_set = MediaDataset(
            self.mix.records,
            FrameSampling(cfg.num_frames, cfg.sample),
            FrameTransform(cfg.image_size, "train", cfg.normalization, cfg.crop_scale, cfg.hflip),
            read_timeout_s=cfg.read_timeout_s,
            frame_times=bool(cfg.get("time_message", False)),
        )

    def train_dataloader(self) -> DataLoader:
        return self.training_loader(self.train_set, self.mix, self.collate, self.config, self.seed)
