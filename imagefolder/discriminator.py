"""Discriminators for the tokenizer's adversarial loss (paper §3.1, Table 3 row 7).

- `PatchGAN`: a small conv net giving a map of real/fake logits, spectral or no weight norm.
- `DinoDiscriminator`: a frozen ViT backbone (DINO-v1 ViT-S/16 in the paper profile, the frozen teacher in
  small profiles) read at a few depths, a small trainable head per depth, DiffAugment on every input. Heads
  "conv2d": a conv net on each depth's patch map; "official" (the official release's): on the embedded input
  and each depth, the patch tokens plus the cls token through spectral-norm conv1d layers with local batch
  norm (`official_head`), cutout at 0.2 of the side.

Both map images (B, 3, H, W) in [-1, 1] to logits (B, ...). The backbone follows the teacher interface
of `backbones.TeacherViT`: `width`, `num_blocks`, `block_features(images, depths) -> [(B, D, g, g)]` and, for the
official heads, `readouts(images, depths) -> [(B, D, N)]` (the embedded input first).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .backbones import TeacherViT
from .config import Config


def diff_augment(x: torch.Tensor, color: bool = True, translation: bool = True, cutout: bool = True,
                 shift_ratio: float = 0.125, cut_ratio: float = 0.5) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020) of (B, 3, H, W): random brightness, saturation
    and contrast; an integer translation of up to `shift_ratio`·size with zero fill; a zeroed square of
    side `cut_ratio`·size. Independent draws per sample."""
    B, _, H, W = x.shape
    dev = x.device
    if color:
        x = x + (torch.rand(B, 1, 1, 1, device=dev) - 0.5)  # brightness
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * (2 * torch.rand(B, 1, 1, 1, device=dev)) + m  # saturation
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * (torch.rand(B, 1, 1, 1, device=dev) + 0.5) + m  # contrast
    if translation:
        r = max(1, int(H * shift_ratio + 0.5))
        sy = torch.randint(-r, r + 1, (B, 1), device=dev)
        sx = torch.randint(-r, r + 1, (B, 1), device=dev)
        iy = torch.arange(H, device=dev)[None] + r + sy  # (B, H) rows in the padded image
        ix = torch.arange(W, device=dev)[None] + r + sx  # (B, W)
        xp = F.pad(x, (r, r, r, r))  # (B, 3, H+2r, W+2r)
        x = xp[torch.arange(B, device=dev)[:, None, None], :, iy[:, :, None], ix[:, None, :]]  # (B, H, W, 3)
        x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
    if cutout:
        ch, cw = max(1, int(H * cut_ratio + 0.5)), max(1, int(W * cut_ratio + 0.5))
        cy = torch.randint(0, H, (B, 1, 1), device=dev)
        cx = torch.randint(0, W, (B, 1, 1), device=dev)
        yy = torch.arange(H, device=dev)[None, :, None]
        xx = torch.arange(W, device=dev)[None, None, :]
        inside = ((yy - cy).abs() <= ch // 2) & ((xx - cx).abs() <= cw // 2)  # (B, H, W)
        x = x * (~inside)[:, None].to(x.dtype)
    return x


class PatchGAN(nn.Module):
    """Strided 4×4 convs (width doubling, at most 8×) with LeakyReLU, then a 3×3 conv to one logit per patch.

    (B, 3, H, W) → (B, 1, H / 2^layers, W / 2^layers)."""

    def __init__(self, width: int = 64, layers: int = 3, norm: str = "spectral"):
        super().__init__()
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        mods: list[nn.Module] = []
        ch_in, ch = 3, width
        for _ in range(layers):
            mods += [wrap(nn.Conv2d(ch_in, ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            ch_in, ch = ch, min(ch * 2, width * 8)
        mods.append(wrap(nn.Conv2d(ch_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LocalBatchNorm(nn.Module):
    """Batch norm over groups of `virtual_batch` samples of (B, C, L): each group's own mean and variance per
    channel (over its samples and positions), in training and evaluation alike; affine per channel."""

    def __init__(self, channels: int, virtual_batch: int = 8, eps: float = 1e-6):
        super().__init__()
        self.virtual_batch, self.eps = virtual_batch, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x_BCL: torch.Tensor) -> torch.Tensor:
        B, C, L = x_BCL.shape
        groups = math.ceil(B / self.virtual_batch)
        if B % groups:
            raise ValueError(f"LocalBatchNorm: batch {B} does not split into {groups} equal groups of at most "
                             f"{self.virtual_batch}")
        x = x_BCL.float().view(groups, B // groups, C, L)
        mean = x.mean(dim=(1, 3), keepdim=True)
        var = x.var(dim=(1, 3), keepdim=True, unbiased=False)
        x = ((x - mean) / torch.sqrt(var + self.eps)).view(B, C, L)
        return x * self.weight[:, None] + self.bias[:, None]


class _Residual(nn.Module):
    """(fn(x) + x) / √2."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fn(x) + x) / math.sqrt(2)


def _conv_block(channels: int, kernel: int) -> nn.Sequential:
    """Spectral-norm conv1d (circular padding, same length) → LocalBatchNorm → LeakyReLU(0.2)."""
    conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, padding_mode="circular")
    return nn.Sequential(spectral_norm(conv), LocalBatchNorm(channels), nn.LeakyReLU(0.2))


def official_head(channels: int, kernel: int = 9) -> nn.Sequential:
    """The official DINO discriminator's head on (B, D, N) tokens → (B, 1, N) logits: a 1-wide conv block,
    a residual `kernel`-wide conv block, a spectral-norm 1-wide conv to one channel."""
    return nn.Sequential(_conv_block(channels, 1), _Residual(_conv_block(channels, kernel)),
                         spectral_norm(nn.Conv1d(channels, 1, 1)))


class DinoDiscriminator(nn.Module):
    """Frozen ViT features + one trainable head per read-out; DiffAugment on every input.

    heads "conv2d": per depth in `depths`, (B, D, g, g) patch map → 1×1 conv to `width` → LeakyReLU → 3×3 conv
    to 1 logit map. heads "official": on the embedded input and per depth, the (B, D, N) read-out (patch tokens
    plus the cls token) → `official_head`; cutout of 0.2 of the side; images larger than the backbone's input
    are cropped to it at a random offset (one per batch) half the time and area-downsampled otherwise, smaller
    ones upsampled bicubically (`fit_official`). The logits of all read-outs are flattened and concatenated →
    (B, Σ g²) or (B, (1 + len(depths))·N).

    The backbone is shared and frozen, so it is held but not registered as a submodule: its owner
    (`losses.TokenizerObjective`) registers it once, moves it and keeps it out of checkpoints."""

    def __init__(self, backbone: TeacherViT, width: int = 64, depths: list[int] | None = None,
                 augment: bool = True, heads: str = "conv2d"):
        super().__init__()
        self._backbone = (backbone.requires_grad_(False).eval(),)
        n = backbone.num_blocks
        self.depths = depths if depths is not None else default_depths(n)
        self.augment, self.head_kind = augment, heads
        self.cut_ratio = 0.2 if heads == "official" else 0.5
        if heads == "official":
            self.heads = nn.ModuleList(official_head(backbone.width) for _ in range(len(self.depths) + 1))
        else:
            self.heads = nn.ModuleList(
                nn.Sequential(spectral_norm(nn.Conv2d(backbone.width, width, 1)), nn.LeakyReLU(0.2),
                              spectral_norm(nn.Conv2d(width, 1, 3, padding=1)))
                for _ in self.depths)

    @property
    def backbone(self) -> TeacherViT:
        return self._backbone[0]

    def train(self, mode: bool = True) -> DinoDiscriminator:
        super().train(mode)
        self.backbone.eval()  # frozen features stay in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment:
            x = diff_augment(x, cut_ratio=self.cut_ratio)
        if self.head_kind == "official":
            x = fit_official(x, self.backbone.image_size)
            feats = self.backbone.readouts(x, self.depths)  # (1 + depths) × (B, D, N)
        else:
            feats = self.backbone.block_features(x, self.depths)  # depths × (B, D, g, g)
        return torch.cat([head(f).flatten(1) for head, f in zip(self.heads, feats)], dim=1)  # (B, Σ read-out sizes)


def fit_official(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) → (B, 3, h, w) = `size` as the official DINO discriminator feeds its backbone: if larger on
    both sides, with probability 1/2 a crop at one random offset for the whole batch, else area downsampling;
    if smaller, bicubic upsampling; unchanged at that size."""
    H, W = x.shape[-2:]
    h, w = size
    if (H, W) == (h, w):
        return x
    if H > h and W > w and torch.rand(()) < 0.5:
        i, j = int(torch.randint(0, H - h + 1, ())), int(torch.randint(0, W - w + 1, ()))
        return x[..., i:i + h, j:j + w]
    return F.interpolate(x, size=(h, w), mode="area" if H > h else "bicubic")


def default_depths(num_blocks: int, count: int = 4) -> list[int]:
    """`count` block indices spread evenly up to the last block (12 blocks → [2, 5, 8, 11])."""
    return sorted({max(0, round(num_blocks * (i + 1) / count) - 1) for i in range(count)})


def build_discriminator(cfg: Config, backbone: TeacherViT | None = None) -> nn.Module | None:
    """The discriminator named by `cfg.tokenizer.discriminator` (None for "none"); "dino" needs a backbone."""
    t = cfg.tokenizer
    if t.discriminator == "none":
        return None
    if t.discriminator == "patchgan":
        return PatchGAN(t.disc_width, t.disc_layers, t.disc_norm)
    if backbone is None:
        raise ValueError("tokenizer.discriminator='dino' needs a frozen backbone (backbones.TeacherViT: the teacher "
                         "in small profiles, DINO-v1 ViT-S/16 in the paper profile)")
    return DinoDiscriminator(backbone, t.disc_width, heads=t.disc_heads)
