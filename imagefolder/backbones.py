"""The ViTs: the one builder of the tokenizer encoder/decoder and the small-profile teacher (timm's
VisionTransformer), and the frozen teacher interface every teacher is used through.

One builder, so that the teacher and the encoder it initialises have the same parameter names.

The teacher interface (`TeacherViT` implements it over any timm VisionTransformer; anything else with these
members works too):
    width: int                                   feature size D
    num_blocks: int                              number of transformer blocks
    forward(images) -> (B, D)                    the CLS (pooled, pre-logits) feature
    block_features(images, depths) -> [(B, D, g, g)]   patch tokens after the given blocks (0-based)
    readouts(images, depths) -> [(B, D, N)]     the official DINO discriminator's inputs (its heads only)
Images are (B, 3, H, W) in [-1, 1]; the teacher applies its own input normalisation. Teachers are frozen
(no trainable parameters, eval mode) but differentiable with respect to their input.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from .config import ViTConfig


def build_vit(vit: ViTConfig, image_size: int, num_classes: int = 0) -> VisionTransformer:
    """A timm ViT with a class token and learned position embeddings (DINOv2-like layout); stochastic depth
    rising linearly over the blocks to `vit.drop_path` (timm's rule), in training mode only."""
    return VisionTransformer(img_size=image_size, patch_size=vit.patch_size, embed_dim=vit.width,
                             depth=vit.depth, num_heads=vit.heads, mlp_ratio=vit.mlp_ratio,
                             num_classes=num_classes, global_pool="token", drop_path_rate=vit.drop_path)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherViT(nn.Module):
    """A frozen timm ViT behind the teacher interface (see the module docstring).

    mean / std: the ViT's input normalisation of [0, 1] images (the default 0.5 / 0.5 keeps [-1, 1]
    images as they are; DINOv2 wants IMAGENET_MEAN / IMAGENET_STD). Inputs whose size differs from the
    ViT's `img_size` are resized bilinearly."""

    mean: torch.Tensor  # buffers: (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self, vit: VisionTransformer, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                 std: tuple[float, ...] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.vit = vit.requires_grad_(False).eval()
        self.width = vit.embed_dim
        self.num_blocks = len(vit.blocks)
        self.image_size = tuple(vit.patch_embed.img_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> TeacherViT:
        return super().train(False)  # always eval

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images + 1) / 2 - self.mean) / self.std
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D) CLS feature."""
        return self.vit.forward_head(self.vit.forward_features(self._prepare(images)), pre_logits=True)

    def block_features(self, images: torch.Tensor, depths: list[int]) -> list[torch.Tensor]:
        """(B, 3, H, W) → one (B, D, g, g) patch-token map per depth."""
        # timm types the return of every flag combination as one union; intermediates_only gives the list
        return cast(list[torch.Tensor], self.vit.forward_intermediates(
            self._prepare(images), indices=list(depths), stop_early=True, output_fmt="NCHW",
            intermediates_only=True))

    def readouts(self, images: torch.Tensor, depths: list[int]) -> list[torch.Tensor]:
        """(B, 3, H, W) → the embedded input (before the blocks), then the tokens after each block in `depths`,
        each as the patch tokens plus the cls token, (B, D, N) (no final norm)."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(self._prepare(images)))))  # (B, 1 + N, D)
        out = [x]
        for i, block in enumerate(vit.blocks[:max(depths) + 1]):
            x = block(x)
            if i in depths:
                out.append(x)
        n_prefix = vit.num_prefix_tokens
        return [(h[:, n_prefix:] + h[:, :1]).transpose(1, 2) for h in out]  # (1 + depths) × (B, D, N)

    def block_features_and_cls(self, images: torch.Tensor, depths: list[int]
                               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """`block_features` and `forward` of the same images from one pass: ([(B, D, g, g)], (B, D))."""
        final, feats = cast(tuple[torch.Tensor, list[torch.Tensor]], self.vit.forward_intermediates(
            self._prepare(images), indices=list(depths), output_fmt="NCHW"))  # (final tokens, intermediates)
        return feats, self.vit.forward_head(final, pre_logits=True)
