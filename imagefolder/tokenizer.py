"""The ImageFolder tokenizer (paper §3.1): ViT encoder with P·K² query tokens, product
multi-scale residual quantization, ViT decoder with mask tokens.

    images (B, 3, H, W) ─encoder(patches + P·K² queries)→ queries (B, P·K², D) ─linear→ f (B, P, C, K, K)
      ─ProductQuantizer→ f̂ (B, P, C, K, K) ─concat branches per position, linear→ (B, K², D')
      ─decoder([cls, g'² mask tokens, cls, codes])→ patches ─linear→ images

`tokenizer.query_window=r` restricts what each query token attends to in the encoder: the cls token, the
patches overlapping the cells within r of its own K×K cell, and the queries of those cells (patches keep
global attention). The paper relies on shared position encodings alone for the spatial alignment; at the
small profiles' scale that does not emerge, so the small profiles build it in (README, Profiles, gives the
measurement). None (the paper
profile) is global attention.

The decoder's sequence is the official one: its cls token, the g'² mask tokens (the patch queries), the cls
token again (the same parameter and position embedding, plus the code-type embedding; `decoder_code_cls`,
False leaves it out), then the K² code tokens.

`token_source="feature_map"` is the VAR-style baseline: the encoder's own patch-grid features are
quantized (one branch, last scale = patch grid) instead of query tokens.

Encoder initialisation (Table 2): `load_encoder_state_dict(teacher_state_dict)` loads a timm ViT
state dict (the small-profile teacher or DINOv2) into the encoder, resampling position embeddings and
patch kernels where the shapes differ and folding DINOv2's LayerScale into the preceding linear
layers; `encoder_tuning` then chooses full fine-tuning, LoRA on the attention qkv, or a frozen
encoder ("linear": only the new parts train).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import Block, VisionTransformer

from .backbones import build_vit
from .config import Config
from .quantize import ProductQuantizer


@dataclass
class TokenizerOutput:
    """recon (B, 3, H, W) unclamped; vq_loss scalar; indices S × (B, P, s, s);
    f_hat (B, P, C, K, K) per-branch quantized features (straight-through); n_scales (B,) kept scales."""

    recon: torch.Tensor
    vq_loss: torch.Tensor
    indices: list[torch.Tensor]
    f_hat: torch.Tensor
    n_scales: torch.Tensor

    @property
    def undropped(self) -> torch.Tensor:
        """(B,) bool: samples that kept all scales (no quantizer dropout)."""
        return self.n_scales == len(self.indices)


class LoRALinear(nn.Linear):
    """A frozen linear layer plus a trainable low-rank update: y = W x + b + (α/r)·B A x.

    Keeps `weight`/`bias` names, so a plain state dict still loads into it; B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.load_state_dict(base.state_dict())
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.scale = rank, (alpha or rank) / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def query_window_mask(n_prefix: int, grid: int, K: int, P: int, radius: int) -> torch.Tensor:
    """Encoder attention mask (N, N), True = may attend, for tokens [prefix, grid² patches, P·K² queries].

    A query of cell (i, j) (cells of side 1/K of the image) sees the prefix tokens, every patch that
    overlaps the cells within `radius` of its own, and the queries of every branch within `radius`
    cells; prefix and patch rows see everything. Overlap is tested in integers: patch a (side 1/grid)
    overlaps cells i−r … i+r when a·K < (i+1+r)·grid and (a+1)·K > (i−r)·grid."""
    a, i = torch.arange(grid), torch.arange(K)
    near_patch = (a[None] * K < (i[:, None] + 1 + radius) * grid) & ((a[None] + 1) * K > (i[:, None] - radius) * grid)
    near_cell = (i[:, None] - i[None]).abs() <= radius  # (K, K) per axis

    def both_axes(m: torch.Tensor) -> torch.Tensor:  # rows × cols
        return (m[:, None, :, None] & m[None, :, None, :]).flatten(0, 1).flatten(1)

    to_patch, to_query = both_axes(near_patch), both_axes(near_cell)  # (K², grid²), (K², K²)
    first_q = n_prefix + grid * grid
    mask = torch.ones(first_q + P * K * K, first_q + P * K * K, dtype=torch.bool)
    mask[first_q:, n_prefix:first_q] = to_patch.repeat(P, 1)
    mask[first_q:, first_q:] = to_query.repeat(P, P)
    return mask


def _embeddings(vit: VisionTransformer) -> tuple[torch.Tensor, torch.Tensor]:
    """(cls token (1, 1, D), position embedding (1, 1 + g², D)) of a ViT of `build_vit`."""
    if vit.cls_token is None or vit.pos_embed is None:
        raise ValueError("the tokenizer's ViTs need a cls token and a learned position embedding (build_vit)")
    return vit.cls_token, vit.pos_embed


class ImageFolderTokenizer(nn.Module):
    """ImageFolder tokenizer built from a whole `Config` (uses `data`, `quantizer`, `tokenizer`).

    With `tokenizer.encoder_init="pretrained"` pass `encoder_state_dict` (the teacher's or DINOv2's timm
    state dict); to load a trained tokenizer checkpoint, build with `encoder_init="random"` first.
    """

    def __init__(self, cfg: Config, encoder_state_dict: dict[str, torch.Tensor] | None = None):
        super().__init__()
        t, q = cfg.tokenizer, cfg.quantizer
        if t.encoder_init == "pretrained" and encoder_state_dict is None:
            raise ValueError("tokenizer.encoder_init='pretrained' needs encoder_state_dict (the teacher's / "
                             "DINOv2 weights); set tokenizer.encoder_init='random' for a random encoder or "
                             "before loading a trained tokenizer checkpoint")
        self.resolution = cfg.data.resolution
        self.token_source, self.code_cls = t.token_source, t.decoder_code_cls
        self.P, self.C, self.K = q.branches, q.code_dim, q.scales[-1]
        self.encoder = build_vit(t.encoder, self.resolution)
        self.decoder = build_vit(t.decoder, self.resolution)
        self.decoder.patch_embed = nn.Identity()  # the decoder reads codes, never pixels
        D, Dd = t.encoder.width, t.decoder.width
        self.enc_grid = cfg.patch_grid
        self.dec_grid = self.resolution // t.decoder.patch_size
        self.dec_patch = t.decoder.patch_size
        if self.token_source == "query":
            self.queries = nn.Parameter(torch.zeros(1, self.P, self.K * self.K, D))  # P·K² learnable tokens
            self.branch_embed = nn.Parameter(torch.zeros(1, self.P, 1, D))  # "level" embedding per branch
        window = t.query_window if self.token_source == "query" else None
        self.register_buffer("attn_mask", None if window is None else query_window_mask(
            self.encoder.num_prefix_tokens, self.enc_grid, self.K, self.P, window), persistent=False)
        self.to_code = nn.Linear(D, self.C)  # width → code dim
        self.quantizer = ProductQuantizer(q)
        self.from_code = nn.Linear(self.P * self.C, Dd)  # branches concatenated per position → width
        self.code_type_embed = nn.Parameter(torch.zeros(1, 1, Dd))  # tells code tokens from mask tokens
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.to_pixels = nn.Linear(Dd, self.dec_patch ** 2 * 3)  # patch → pixels
        self.init_weights()
        if encoder_state_dict is not None:
            self.load_encoder_state_dict(encoder_state_dict)
        self.encoder_tuning = "full"
        self.set_encoder_tuning(t.encoder_tuning, t.lora_rank)

    # ------------------------------------------------------------------ init and encoder tuning

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise the parts that are not timm's ViTs (those keep timm's own init):
        query / mask tokens N(0, 0.02), branch and type embeddings N(0, 0.02), linear maps
        truncated-normal(0.02) with zero bias; the quantizer initialises its own codebooks and φ convs."""
        for p in (self.mask_token, self.code_type_embed) + ((self.queries, self.branch_embed)
                                                              if self.token_source == "query" else ()):
            nn.init.normal_(p, std=0.02)
        for lin in (self.to_code, self.from_code, self.to_pixels):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.quantizer.init_weights()

    def set_encoder_tuning(self, mode: str, lora_rank: int = 8) -> None:
        """full: everything trains; lora: encoder frozen except LoRA on each block's attn.qkv;
        linear: encoder frozen (patch embedding, blocks, norms, position embedding), new parts train."""
        self.encoder_tuning = mode
        self.encoder.requires_grad_(mode == "full")
        if mode == "lora":
            for blk in cast(Sequence[Block], self.encoder.blocks):
                if not isinstance(blk.attn.qkv, LoRALinear):
                    blk.attn.qkv = LoRALinear(cast(nn.Linear, blk.attn.qkv), lora_rank)

    @torch.no_grad()
    def load_encoder_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a timm ViT state dict (teacher / DINOv2) into the encoder.

        Heads and DINOv2's mask token are dropped; position embeddings and patch kernels are resampled
        when the grid or patch size differ; LayerScale gammas (`blocks.i.ls1.gamma`, `ls2.gamma`) are
        folded into `attn.proj` / `mlp.fc2`. Any other mismatch raises, naming the keys."""
        sd = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "fc_norm.", "mask_token"))}
        for key in [k for k in sd if re.fullmatch(r"blocks\.\d+\.ls[12]\.gamma", k)]:
            gamma = sd.pop(key)
            prefix, which = key.rsplit(".ls", 1)
            lin = f"{prefix}.attn.proj" if which.startswith("1") else f"{prefix}.mlp.fc2"
            sd[f"{lin}.weight"] = sd[f"{lin}.weight"] * gamma[:, None]
            sd[f"{lin}.bias"] = sd[f"{lin}.bias"] * gamma
        own = self.encoder.state_dict()
        if "pos_embed" in sd and sd["pos_embed"].shape != own["pos_embed"].shape:
            n_prefix = self.encoder.num_prefix_tokens
            sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], [self.enc_grid, self.enc_grid],
                                                     num_prefix_tokens=n_prefix)
        w = "patch_embed.proj.weight"
        if w in sd and sd[w].shape != own[w].shape:
            sd[w] = resample_patch_embed(sd[w], list(own[w].shape[-2:]))
        missing = [k for k in own if k not in sd and "lora_" not in k]
        unexpected = [k for k in sd if k not in own]
        wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
                 if k in own and sd[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(f"encoder state dict does not fit: missing {missing[:8]}, unexpected "
                             f"{unexpected[:8]}, wrong shapes {wrong[:8]}")
        self.encoder.load_state_dict(sd, strict=False)

    # ------------------------------------------------------------------ checks

    def validate_images(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a float (B, 3, R, R) tensor in [-1, 1] with R = data.resolution."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ValueError(f"images: expected a float tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images: expected shape (B, 3, {self.resolution}, {self.resolution}), "
                             f"got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"images: this tokenizer takes {self.resolution}×{self.resolution} images "
                             f"(data.resolution), got {x.shape[-2]}×{x.shape[-1]}")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"images: values must be in [-1, 1], got [{lo:.3g}, {hi:.3g}] "
                             "(convert uint8 with x / 127.5 - 1)")

    # ------------------------------------------------------------------ encoder / decoder

    def _grid_pos(self, vit: VisionTransformer, size: int) -> torch.Tensor:
        """The ViT's patch position embedding resampled to size×size → (1, size², D)."""
        pos = _embeddings(vit)[1][:, vit.num_prefix_tokens:]  # (1, g², D)
        g = int(math.isqrt(pos.shape[1]))
        if g == size:
            return pos
        return resample_abs_pos_embed(pos, [size, size], old_size=[g, g], num_prefix_tokens=0)

    @staticmethod
    def _prefix_and_positions(vit: VisionTransformer, x_BND: torch.Tensor) -> torch.Tensor:
        """Prepend the cls token and add the position embedding → (B, 1 + N, D), for the ViTs of
        `build_vit` (one cls token, no register tokens, `pos_embed` covering the cls token)."""
        cls_11D, pos_1ND = _embeddings(vit)
        return torch.cat([cls_11D.expand(x_BND.shape[0], -1, -1), x_BND], dim=1) + pos_1ND

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """Checked images (B, 3, H, W) → continuous features f (B, P, C, K, K) before quantization."""
        self.validate_images(images)
        return self._features(images)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """`encode_features` without the input check (the training step's images come from the loader)."""
        enc = self.encoder
        x = self._prefix_and_positions(enc, enc.patch_embed(images))  # (B, 1 + g², D): cls + patches with positions
        B = x.shape[0]
        if self.token_source == "query":
            # every branch's K×K set gets the same 2-D positions (the encoder's own, resampled) + its branch embedding
            q = self.queries + self._grid_pos(enc, self.K)[:, None] + self.branch_embed  # (1, P, K², D)
            x = torch.cat([x, q.flatten(1, 2).expand(B, -1, -1)], dim=1)  # (B, 1 + g² + P·K², D)
        x = enc.norm_pre(x)
        for block in enc.blocks:
            x = block(x, attn_mask=self.attn_mask)
        x = enc.norm(x)
        if self.token_source == "query":
            z = x[:, -self.P * self.K * self.K:]  # (B, P·K², D): only the query tokens leave
        else:
            z = x[:, enc.num_prefix_tokens:]  # (B, g², D) with g = K
        f = self.to_code(z)  # (B, P·K², C)
        return f.view(B, self.P, self.K, self.K, self.C).permute(0, 1, 4, 2, 3)  # (B, P, C, K, K)

    def decode_fhat(self, f_hat_BPCkk: torch.Tensor) -> torch.Tensor:
        """Quantized features (B, P, C, K, K) → images (B, 3, H, W), unclamped."""
        dec = self.decoder
        B = f_hat_BPCkk.shape[0]
        codes = f_hat_BPCkk.flatten(3).permute(0, 3, 1, 2).reshape(B, self.K * self.K, self.P * self.C)  # (B, K², P·C)
        codes = self.from_code(codes) + self._grid_pos(dec, self.K) + self.code_type_embed  # (B, K², D')
        if self.code_cls:  # the decoder's cls token again, with its position and the code-type embedding
            cls_11D, pos_1ND = _embeddings(dec)
            cls = cls_11D + pos_1ND[:, :1] + self.code_type_embed  # (1, 1, D')
            codes = torch.cat([cls.expand(B, -1, -1), codes], dim=1)  # (B, 1 + K², D')
        masks = self._prefix_and_positions(dec, self.mask_token.expand(B, self.dec_grid ** 2, -1))  # (B, 1 + g'², D')
        x = dec.norm(dec.blocks(dec.norm_pre(torch.cat([masks, codes], dim=1))))
        x = self.to_pixels(x[:, dec.num_prefix_tokens:dec.num_prefix_tokens + self.dec_grid ** 2])  # (B, g'², p²·3)
        g, p = self.dec_grid, self.dec_patch
        x = x.view(B, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4)  # (B, 3, g, p, g, p)
        return x.reshape(B, 3, g * p, g * p)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (patch → pixels), for the adaptive GAN weight."""
        return self.to_pixels.weight

    # ------------------------------------------------------------------ public API

    def forward(self, images: torch.Tensor, n_scales: torch.Tensor | None = None) -> TokenizerOutput:
        """Training / evaluation pass. The images are not checked here (no device sync per training step; the
        public conversions below check theirs). Quantizer dropout applies in training mode unless `n_scales`
        (B,) is given."""
        q = self.quantizer(self._features(images), n_scales)
        return TokenizerOutput(self.decode_fhat(q.f_hat), q.loss, q.indices, q.f_hat, q.n_scales)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) → indices S × (B, P, s, s) (all scales, never dropped)."""
        f = self.encode_features(images)
        full = torch.full((f.shape[0],), self.quantizer.num_scales, dtype=torch.long, device=f.device)
        return self.quantizer(f, full).indices

    def indices_to_fhat(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Checked indices (any prefix of scales) → f̂ (B, P, C, K, K)."""
        self.quantizer.check_indices(indices)
        return self.quantizer.indices_to_fhat(indices)

    @torch.no_grad()
    def decode(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Indices S × (B, P, s, s), or their first n scales → images (B, 3, H, W) clamped to [-1, 1]."""
        return self.decode_fhat(self.indices_to_fhat(indices)).clamp(-1, 1)

    def scales_kept(self, n_scales: int | None) -> int:
        """`n_scales` checked against the quantizer's scales (None: all of them)."""
        total = self.quantizer.num_scales
        if n_scales is not None and not 1 <= n_scales <= total:
            raise ValueError(f"n_scales: {n_scales} is not in [1, {total}]")
        return total if n_scales is None else n_scales

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, n_scales: int | None = None) -> torch.Tensor:
        """Encode and decode, keeping the first `n_scales` scales (all if None) → images in [-1, 1]."""
        n = self.scales_kept(n_scales)
        return self.decode(self.encode(images)[:n])

    @torch.no_grad()
    def decode_with_branches_zeroed(self, indices: list[torch.Tensor], zero_branch: int | list[int]) -> torch.Tensor:
        """Decode with the quantized features of the given branch(es) set to zero (paper Fig. 6)."""
        f_hat = self.indices_to_fhat(indices).clone()
        for p in [zero_branch] if isinstance(zero_branch, int) else zero_branch:
            if not 0 <= p < self.P:
                raise ValueError(f"zero_branch: {p} is not a branch index in [0, {self.P})")
            f_hat[:, p] = 0
        return self.decode_fhat(f_hat).clamp(-1, 1)
