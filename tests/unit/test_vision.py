"""UMT ViT: shapes, block count, position table against the reference formula, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from videochat2.models.vision import VisionConfig, VisionTransformer, sinusoid_table, video_position_table


def small_config(**overrides) -> VisionConfig:
    values = dict(img_size=32, patch_size=16, embed_dim=32, depth=3, num_heads=4, return_index=-2)
    values.update(overrides)
    return VisionConfig(**values)


def reference_angle(position: int, channel: int, dim: int) -> float:
    """angle = p / 10000^(2·⌊j/2⌋/d); sin on even channels, cos on odd ones."""
    angle = position / 10000 ** (2 * (channel // 2) / dim)
    return math.sin(angle) if channel % 2 == 0 else math.cos(angle)


def reference_linear_in_time(table: torch.Tensor, new_frames: int) -> torch.Tensor:
    """Half-pixel-centre linear resize along frames ([T, N, C] → [new_T, N, C]), written out by hand."""
    frames = table.shape[0]
    out = []
    for i in range(new_frames):
        src = max((i + 0.5) * frames / new_frames - 0.5, 0.0)
        lo = min(int(math.floor(src)), frames - 1)
        hi = min(lo + 1, frames - 1)
        w = src - lo
        out.append((1 - w) * table[lo] + w * table[hi])
    return torch.stack(out)


def test_sinusoid_matches_formula():
    dim = 10
    table = sinusoid_table(50, dim)
    for p in (0, 1, 7, 49):
        for j in range(dim):
            assert table[p, j].item() == pytest.approx(reference_angle(p, j, dim), abs=1e-12)


@pytest.mark.parametrize("frames", [4, 8, 16])
def test_position_table_frames_follow_linear_interpolation(frames):
    dim, grid = 16, 14
    table = video_position_table(dim, frames, (grid, grid), ckpt_frames=4, pos_grid=grid)
    assert table.shape == (1, frames * grid * grid, dim)
    base = sinusoid_table(4 * grid * grid, dim).float().reshape(4, grid * grid, dim)
    expected = reference_linear_in_time(base, frames).reshape(1, -1, dim)
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)
    if frames == 4:
        assert torch.equal(table.reshape(-1, dim), base.reshape(-1, dim))


def test_position_table_16_frames_is_interpolated_from_4_not_8():
    dim, grid = 8, 14
    from_ckpt = video_position_table(dim, 16, (grid, grid), ckpt_frames=4, pos_grid=grid)
    raw_16 = sinusoid_table(16 * grid * grid, dim).float()[None]
    assert not torch.allclose(from_ckpt, raw_16, atol=1e-3)


def test_image_table_is_first_frame_and_small_images_resize_bicubically():
    dim = 16
    video = video_position_table(dim, 4, (14, 14), ckpt_frames=4, pos_grid=14)
    image = video_position_table(dim, 1, (14, 14), ckpt_frames=4, pos_grid=14, is_image=True)
    torch.testing.assert_close(image, video[:, : 14 * 14])
    small = video_position_table(dim, 1, (2, 2), ckpt_frames=4, pos_grid=14, is_image=True)
    grid = sinusoid_table(14 * 14, dim).float().reshape(1, 14, 14, dim).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False)
    torch.testing.assert_close(small, expected.permute(0, 2, 3, 1).reshape(1, 4, dim))


def test_pos_grid_follows_the_original_two_paths():
    assert VisionConfig.umt_l16().pos_grid == 14
    assert VisionConfig(img_size=224, patch_size=14).pos_grid == 16
    assert VisionConfig.tiny().pos_grid == 14


@pytest.mark.parametrize("frames", [1, 4, 8])
def test_output_shapes(frames):
    model = VisionTransformer(small_config(img_size=64)).eval()
    out = model(torch.randn(2, frames, 3, 64, 64))
    assert out.shape == (2, frames, 16, 32)


def test_tubelet_halves_the_frames():
    model = VisionTransformer(small_config(tubelet_size=2)).eval()
    assert model(torch.randn(1, 4, 3, 32, 32)).shape == (1, 2, 4, 32)


def test_return_index_builds_only_needed_blocks_and_returns_the_last():
    config = small_config(depth=5, return_index=-2)
    model = VisionTransformer(config).eval()
    assert len(model.encoder.blocks) == 4
    keys = set(model.state_dict())
    assert "encoder.blocks.3.attn.q_bias" in keys and "encoder.blocks.4.norm1.weight" not in keys
    assert not any(k.startswith("encoder.norm") for k in keys)
    assert "encoder.blocks.0.attn.qkv.bias" not in keys
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        tokens = model.encoder.patch_embed(x.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)
        tokens = tokens + model.encoder.position_table(4, (2, 2), False, "cpu", torch.float32)
        for block in model.encoder.blocks:
            tokens = block(tokens)
        torch.testing.assert_close(model(x), tokens.reshape(1, 4, 4, 32))


def test_key_bias_is_zero():
    model = VisionTransformer(small_config()).eval()
    attn = model.encoder.blocks[0].attn
    with torch.no_grad():
        attn.q_bias.fill_(1.0)
        attn.v_bias.fill_(2.0)
    x = torch.randn(1, 5, 32)
    qkv = torch.nn.functional.linear(x, attn.qkv.weight)
    b, n, c = x.shape
    q, k, v = qkv.reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
    q, v = q + 1.0, v + 2.0
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)
    expected = attn.proj((scores @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_position_table_is_cached_per_shape():
    encoder = VisionTransformer(small_config()).encoder
    first = encoder.position_table(4, (2, 2), False, "cpu", torch.float32)
    assert encoder.position_table(4, (2, 2), False, "cpu", torch.float32) is first
    assert encoder.position_table(8, (2, 2), False, "cpu", torch.float32).shape[1] == 32


def test_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    plain = VisionTransformer(small_config())
    ckpt = VisionTransformer(small_config(checkpoint_num=2))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 3, 32, 32)
    plain(x).square().sum().backward()
    ckpt(x).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_presets():
    big = VisionConfig.umt_l16()
    assert (big.embed_dim, big.depth, big.num_heads, big.patch_size, big.img_size, big.return_index) == (
        1024,
        24,
        16,
        16,
        224,
        -2,
    )
    assert big.num_blocks == 23
    tiny = VisionConfig.tiny()
    assert tiny.img_size == 64 and tiny.num_blocks == 4
