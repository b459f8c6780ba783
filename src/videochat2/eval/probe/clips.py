"""The probe's data and features: labelled clips read as the benchmark reads them, then mean features.

Labelled clips come from a JSON list of `{"path", "task", "label", "bound"?, "media_type"?}` (the
embedded world writes one, `annotations/events.json`, with every clip's ground truth); without a media
type, a `.gif` is a gif, a path without a suffix a frame folder, anything else a video file. Each clip
becomes a one-option MVBench question, so it is sampled by the official index rule, cached and batched
exactly as the benchmark's clips are.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from videochat2.builder import LoadedModel
from videochat2.eval.mvbench.tasks import MVBenchQuestion
from videochat2.eval.progress import Progress
from videochat2.models.alignment import VideoChat2Alignment
from videochat2.models.videochat2 import VideoChat2
from videochat2.prompts import SYSTEM_PROMPT


def load_labelled_clips(
    annotation: str | Path, media_root: str | Path, path_prefix: str | None = None
) -> list[MVBenchQuestion]:
    """The records whose path starts with `path_prefix` (all when None), in file order."""
    records = json.loads(Path(annotation).read_text())
    clips = []
    for record in records:
        missing = {"path", "task", "label"} - record.keys()
        if missing:
            raise ValueError(f"{annotation}: a labelled clip needs path, task and label; one lacks {sorted(missing)}")
        if path_prefix and not record["path"].startswith(path_prefix):
            continue
        bound = tuple(record["bound"]) if record.get("bound") else None
        label = str(record["label"])
        clips.append(
            MVBenchQuestion(
                task=record["task"],
                index=len(clips),
                video=Path(media_root) / record["path"],
                media_type=record.get("media_type") or media_type_of(record["path"]),
                bound=bound,
                question="",
                candidates=(label,),
                answer=label,
                gold="A",
                cache_key=("probe", record["path"], *(bound or (None, None))),
            )
        )
    if not clips:
        raise ValueError(f"{annotation}: no labelled clips under {path_prefix!r}")
    return clips


def media_type_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return "gif" if suffix == ".gif" else "frame" if not suffix else "video"


def collate_clips(items: list[dict]) -> dict:
    """MVBenchDataset items -> stacked frames and each clip's read error (None when it was read)."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "errors": [item["error"] for item in items],
    }


@torch.no_grad()
def clip_features(
    model: VideoChat2 | VideoChat2Alignment,
    loader: DataLoader,
    instruction: tuple[Tensor, Tensor] | None = None,
    device: torch.device | None = None,
) -> dict[str, Tensor]:
    """Per clip, the mean of the ViT tokens (`vit`) and of the visual tokens (`visual_tokens`).

    Visual tokens are the Q-Former's query outputs for a stage-1 model and the projected tokens the LLM
    reads for stages 2-3, the latter with `instruction` (ids, mask) in the Q-Former as the benchmark has.
    Unreadable clips stop the probe: a probe fitted around holes would not say what the features hold.
    The model runs on `device` (default: the CPU); the features come back to the CPU in float32.
    """
    device = device or torch.device("cpu")
    if instruction:
        instruction = tuple(t.to(device) for t in instruction)
    vit, visual = [], []
    with Progress(len(loader.dataset), "clips") as progress:
        for batch in loader:
            if any(batch["errors"]):
                raise RuntimeError(f"unreadable clips: {[e for e in batch['errors'] if e]}")
            pixels = batch["pixel_values"].to(device, non_blocking=True)
            if isinstance(model, VideoChat2Alignment):
                vision_embeds, tokens = model.encode_vision(pixels)
            else:
                vision_embeds = model.encode_frames(pixels)
                ids, mask = (t.expand(len(pixels), -1) for t in instruction) if instruction else (None, None)
                tokens = model.visual_tokens(vision_embeds, ids, mask)
            vit.append(vision_embeds.mean(1).float().cpu())
            visual.append(tokens.mean(1).float().cpu())
            progress.update(len(batch["errors"]))
    return {"vit": torch.cat(vit), "visual_tokens": torch.cat(visual)}


def probe_instruction(loaded: LoadedModel) -> tuple[Tensor, Tensor] | None:
    """The Q-Former instruction the benchmark gives a stage-3 model (the system prompt); else none."""
    if loaded.spec.videochat2 is None or not loaded.spec.videochat2.qformer_text_input:
        return None
    encoded = loaded.qformer_tokenizer([SYSTEM_PROMPT], return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]
