"""Frame transforms: the same random crop and flip for every frame of a clip.

Training follows the original: random resized crop (bicubic) + optional horizontal flip, then /255
and normalisation. The test transform resizes to a square (the original's retrieval/test path); the
official MVBench transform resizes the short side and centre-crops, with CLIP statistics.

Crops and resizes run on the uint8 frames, before the conversion to float: torch's uint8
antialiased bicubic kernel matches PIL's bicubic resize of the original within 0.01 grey levels
on average and is ~7x faster than PIL per frame, and ~9x faster than resizing float frames.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of frames [T,3,H,W] (uint8 stays uint8, rounded); antialiased when shrinking, like PIL."""
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def _normalize(frames: torch.Tensor, normalization: str) -> torch.Tensor:
    mean, std = NORMALIZATION[normalization]
    mean_t = torch.tensor(mean, dtype=frames.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames / 255.0 - mean_t) / std_t


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float], rng: random.Random, ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering `scale` of the area with an aspect ratio in `ratio`."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


@dataclass
class FrameTransform:
    """uint8 frames [T,H,W,3] -> normalised float frames [T,3,size,size].

    mode: "train" (random resized crop + optional flip), "test" (square resize) or
    "official" (short side to `size`, centre crop: the MVBench notebook's preprocessing).
    """

    size: int = 224
    mode: str = "test"
    normalization: str = "imagenet"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("train", "test", "official"):
            raise ValueError(f"transform mode must be train, test or official, got {self.mode!r}")
        if self.normalization not in NORMALIZATION:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATION)}, got {self.normalization!r}")
        self.crop_scale = tuple(self.crop_scale)

    def __call__(self, frames: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2)
        if self.mode == "train":
            x = self._train(x, rng or random.Random())
        elif self.mode == "official":
            x = self._short_side_center_crop(x)
        else:
            x = _resize(x, self.size, self.size)
        return _normalize(x.float().clamp(0, 255), self.normalization)

    def _train(self, x: torch.Tensor, rng: random.Random) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(x.shape[-2], x.shape[-1], self.crop_scale, rng)
        x = _resize(x[..., top : top + h, left : left + w], self.size, self.size)
        if self.hflip and rng.random() < 0.5:
            x = x.flip(-1)
        return x

    def _short_side_center_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h <= w:
            new_h, new_w = self.size, int(self.size * w / h)
        else:
            new_h, new_w = int(self.size * h / w), self.size
        x = _resize(x, new_h, new_w)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]
