"""UMT video ViT (the VideoChat2 vision encoder).

A plain ViT over space-time patches: a tubelet Conv3d embeds each frame's 16×16 patches, a fixed sinusoidal
table gives every (t, h, w) token a position, then pre-norm blocks run over all T·H·W tokens at once. Module
names follow the official checkpoints (`encoder.patch_embed.proj`, `encoder.blocks.N.…`) so released weights
load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from videochat2.models.layers import DropPath, linspace

# The original builds every table for a 14×14 grid unless img_size is exactly 224 (its second table path).
PRETRAIN_GRID = 14
# Architecture presets, by the name configs use; each is the classmethod of that name.
VISION_PRESETS = ("tiny", "umt_l16")


@dataclass
class VisionConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    tubelet_size: int = 1
    # Negative: build only depth + return_index + 1 blocks and return the last one's output (-2: penultimate).
    return_index: int = -2
    # Temporal positions (frames // tubelet_size) the sinusoid table is built for before interpolation.
    ckpt_num_frame: int = 4
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    # Run the first `checkpoint_num` blocks under activation checkpointing while gradients are needed.
    checkpoint_num: int = 0
    # Widths of a convolutional stem before the patch projection (empty: UMT's plain patch embedding). Each
    # stem layer halves height and width and looks at 3 neighbouring frames, so motion and shape become
    # local features; the patch projection covers the rest of the patch. A ViT trained from scratch on a
    # few thousand clips learns them in hundreds of steps with the stem and hardly at all without it.
    stem_channels: tuple[int, ...] = ()

    @classmethod
    def umt_l16(cls, **overrides) -> VisionConfig:
        """UMT-L/16 as used by VideoChat2: 23 of 24 blocks built, penultimate-layer features."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> VisionConfig:
        """A CPU-sized encoder for 64×64 synthetic clips: a 4×4 grid of 16-px patches, 128-d, 4 blocks built."""
        values = dict(
            img_size=64, patch_size=16, embed_dim=128, depth=5, num_heads=4, return_index=-2, stem_channels=(32, 64)
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> VisionConfig:
        if preset not in VISION_PRESETS:
            raise ValueError(f"unknown vision encoder preset {preset!r}; choose one of {sorted(VISION_PRESETS)}")
        return getattr(cls, preset)(**overrides)

    @property
    def num_blocks(self) -> int:
        return self.depth + self.return_index + 1 if self.return_index < 0 else self.return_index + 1

    @property
    def pos_grid(self) -> int:
        """Grid side of the table before spatial interpolation (the original's two construction paths)."""
        return self.img_size // self.patch_size if self.img_size == 224 else PRETRAIN_GRID


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """The 1-D transformer table over flat positions, in float64 as the original builds it with numpy."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table


def video_position_table(
    dim: int, frames: int, grid: tuple[int, int], ckpt_frames: int, pos_grid: int, is_image: bool = False
) -> Tensor:
    """Position table [1, frames·gh·gw, dim] for the given token layout.

    Starts from the flat table over `ckpt_frames × pos_grid × pos_grid` positions, resizes each frame's grid
    bicubically to `grid` when it differs, then resizes linearly in time to `frames` when that differs.
    Images take only the first frame of the table (no temporal interpolation), as the original's image table.
    """
    table_frames = 1 if is_image else ckpt_frames
    table = sinusoid_table(table_frames * pos_grid * pos_grid, dim).float()
    table = table.reshape(table_frames, pos_grid, pos_grid, dim)
    if grid != (pos_grid, pos_grid):
        table = F.interpolate(table.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1)
    if not is_image and frames != table_frames:
        gh, gw = grid
        table = table.permute(1, 2, 3, 0).reshape(gh * gw, dim, table_frames)
        table = F.interpolate(table, size=frames, mode="linear", align_corners=False)
        table = table.reshape(gh, gw, dim, frames).permute(3, 0, 1, 2)
    return table.reshape(1, -1, dim)


class PatchEmbed(nn.Module):
    """[B, 3, T, H, W] -> [B, C, T', gh, gw]: the optional conv stem, then the patch projection."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        stride = 2 ** len(config.stem_channels)
        if config.patch_size % stride:
            raise ValueError(f"patch_size {config.patch_size} is not divisible by the stem's stride {stride}")
        widths = (config.in_chans, *config.stem_channels)
        layers = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Conv3d(width_in, width_out, (3, 3, 3), stride=(1, 2, 2), padding=1), nn.GELU()]
        self.stem = nn.Sequential(*layers) if layers else None
        kernel = (config.tubelet_size, config.patch_size // stride, config.patch_size // stride)
        self.proj = nn.Conv3d(widths[-1], config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.stem(x) if self.stem is not None else x)


class Attention(nn.Module):
    """Multi-head self-attention whose key bias is fixed at zero (q and v biases are separate parameters)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        hidden = int(config.embed_dim * config.mlp_ratio)
        self.fc1 = nn.Linear(config.embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, config.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: VisionConfig, drop_path_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionEncoder(nn.Module):
    """Patch embedding, position table and blocks; no final norm (VideoChat2 never builds one)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        rates = linspace(config.drop_path_rate, config.depth)
        self.blocks = nn.ModuleList(Block(config, rates[i]) for i in range(config.num_blocks))
        self._tables: dict[tuple, Tensor] = {}

    def position_table(self, frames: int, grid: tuple[int, int], is_image: bool, device, dtype) -> Tensor:
        """Cached per token layout; a constant, never a parameter (not in any checkpoint)."""
        key = (frames, grid, is_image, str(device), dtype)
        if key not in self._tables:
            c = self.config
            table = video_position_table(c.embed_dim, frames, grid, c.ckpt_num_frame, c.pos_grid, is_image)
            self._tables[key] = table.to(device=device, dtype=dtype)
        return self._tables[key]

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, T, H, W] → [B, T', gh·gw, C] with T' = T // tubelet_size."""
        is_image = x.shape[2] == 1
        x = self.patch_embed(x)
        b, c, t, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_table(t, (gh, gw), is_image, x.device, x.dtype)
        for i, block in enumerate(self.blocks):
            if i < self.config.checkpoint_num and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.reshape(b, t, gh * gw, c)


class VisionTransformer(nn.Module):
    """The `vision_encoder` of VideoChat2: takes clips as [B, T, 3, H, W] (images: T = 1)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.encoder = VisionEncoder(config)
        self.apply(_init_weights)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """[B, T, 3, H, W] → [B, T', L, C]: per-frame patch tokens of the selected block."""
        if pixel_values.ndim != 5:
            raise ValueError(f"expected pixel_values [B, T, 3, H, W] (images: T = 1), got {tuple(pixel_values.shape)}")
        return self.encoder(pixel_values.permute(0, 2, 1, 3, 4))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv3d):
        fan_in = module.weight[0].numel()
        nn.init.trunc_normal_(module.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(module.bias)
