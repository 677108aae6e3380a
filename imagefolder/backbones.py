"""The ViT used by the tokenizer encoder/decoder and the small-profile teacher: timm's VisionTransformer.

One builder, so that the teacher and the encoder it initialises have the same parameter names.
"""
from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from .config import ViTConfig


def build_vit(vit: ViTConfig, image_size: int, num_classes: int = 0) -> VisionTransformer:
    """A timm ViT with a class token and learned position embeddings (DINOv2-like layout); stochastic depth
    rising linearly over the blocks to `vit.drop_path` (timm's rule), in training mode only."""
    return VisionTransformer(img_size=image_size, patch_size=vit.patch_size, embed_dim=vit.width,
                             depth=vit.depth, num_heads=vit.heads, mlp_ratio=vit.mlp_ratio,
                             num_classes=num_classes, global_pool="token", drop_path_rate=vit.drop_path)
