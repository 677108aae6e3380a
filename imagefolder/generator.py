"""The autoregressive generator: a VAR-style next-scale transformer over a token layout (`layouts.py`:
folded (ImageFolder), unfolded, and the next-token raster baseline), chosen by `cfg.generator.layout`.

The layout says what the sequence is (positions, AR steps, inputs, targets); this module holds the
transformer, `sampler.py` the sampling loop that `Generator.sample` runs. The first step's input is the
start token: class embedding + a learned start position embedding. Every position also gets a learned
position embedding and a level (scale) embedding (and a branch embedding where the layout asks). Blocks
are GPT-2 style with adaptive layer norm on the class embedding (adaLN-Zero init) and the layout's
block-causal mask; attention is VAR's l2-normalised q·k with a learned per-head scale, or 1/√d
(`generator.attention`, `SelfAttention`); class dropout to a null class trains classifier-free guidance.
Loss: cross-entropy averaged over positions and branches. Paper model (depth 17, width 1088, 2×4096
head): 362.5M parameters in the blocks (the paper's #Para ≈ 362M), 375.3M in total.

The generator knows the tokenizer only through the quantizer's public conversions (CONTRACTS.md):
`teacher_forcing_inputs`, `next_input` and the attributes `scales`, `branches`, `codebook_size`,
`code_dim`. Inputs are validated where they enter (`sample`, `GeneratorObjective`, `data.TokenDataset`),
not in the training step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from . import sampler
from .config import GeneratorConfig, QuantizerConfig
from .layouts import Layout, Quantizer, build_layout, unflatten_indices
from .quantize import ProductQuantizer
from .sampler import KVCache, StaticKVCache
from .train import Objective

# ----------------------------------------------------------------------------- transformer

MAX_LOG_SCALE = math.log(100.0)  # the l2_norm attention's per-head log-scale is clamped here (VAR)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_LL: torch.Tensor | None,
                     dropout_p: float, scale: float | None = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention` as two matmuls and a softmax (q, k, v (B, H, l | n, d)): under CPU
    bf16 autocast all three run in bf16 (CPU autocast keeps a softmax in its input's dtype), where the
    fused CPU kernel is slower (`make bench`). Same mask convention (True = may attend) and `scale`
    (None: 1/√d)."""
    scores = (q * (q.shape[-1] ** -0.5 if scale is None else scale)) @ k.transpose(-2, -1)  # (B, H, l, n)
    if mask_LL is not None:
        scores = scores.masked_fill(~mask_LL, float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout_p) @ v  # (B, H, l, d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional boolean mask (True = may attend) and KV cache.
    `fused_attn` (as in timm's Attention): the fused kernel, else `matmul_attention`.

    attention "scaled_dot": softmax(q kᵀ/√d) with a full qkv bias. "l2_norm" (VAR's): q and k l2-normalised
    per head, q multiplied by exp(min(s_h, ln 100)) with `scale_mul` s_h a learned per-head log-scale
    (initialised at ln 4), softmax scale 1; q and v have a bias, k none. The cache holds the normalised keys.
    """

    fused_attn = True
    zero_k_bias: torch.Tensor  # buffer (l2_norm): the key's bias, zero

    def __init__(self, width: int, heads: int, dropout: float, attention: str):
        super().__init__()
        self.heads, self.dropout, self.l2_norm = heads, dropout, attention == "l2_norm"
        self.qkv = nn.Linear(width, 3 * width, bias=not self.l2_norm)
        if self.l2_norm:
            self.q_bias, self.v_bias = nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width))
            self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
            self.scale_mul = nn.Parameter(torch.full((heads, 1, 1), math.log(4.0)))  # s_h, broadcast over (l, d)
        self.proj = nn.Linear(width, width)

    def constants(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What a forward reads of the parameters besides the weights, computed once per sequence: the qkv
        bias (3W; (b_q, 0, b_v) for l2_norm) and the l2_norm per-head gain exp(min(s_h, ln 100)) (H, 1, 1)."""
        if not self.l2_norm:
            return self.qkv.bias, None
        return (torch.cat([self.q_bias, self.zero_k_bias, self.v_bias]),
                self.scale_mul.clamp(max=MAX_LOG_SCALE).exp())

    def forward(self, x_BLW: torch.Tensor, mask_LL: torch.Tensor | None = None,
                cache: KVCache | StaticKVCache | None = None,
                constants: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Attention over x (B, L, W) → (B, L, W); `constants` from `constants()` (None: computed here)."""
        B, L, W = x_BLW.shape
        bias, gain_H11 = self.constants() if constants is None else constants
        qkv = F.linear(x_BLW, self.qkv.weight, bias).view(B, L, 3, self.heads, W // self.heads)  # (B, L, 3, H, d)
        if gain_H11 is not None:  # l2_norm
            qk = F.normalize(qkv[:, :, :2], dim=-1)  # (B, L, 2, H, d): q and k in one pass
            q = qk[:, :, 0].transpose(1, 2) * gain_H11  # (B, H, L, d)
            k, v, scale = qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2), 1.0
        else:
            (q, k, v), scale = qkv.permute(2, 0, 3, 1, 4), None  # 3×(B, H, L, d)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, H, n, d)
        dropout_p = self.dropout if self.training else 0.0
        o = (F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL, dropout_p=dropout_p, scale=scale)
             if self.fused_attn else matmul_attention(q, k, v, mask_LL, dropout_p, scale))  # (B, H, l, d)
        return self.proj(o.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    """Pre-norm transformer block whose two layer norms and residual gates are set by the class
    embedding (adaptive layer norm): x += γ₁·attn(LN(x)(1+a₁)+b₁); x += γ₂·mlp(LN(x)(1+a₂)+b₂). Each
    residual branch is dropped per sample at rate `drop_path` in training (stochastic depth)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, attention: str,
                 drop_path: float = 0.0):
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        hidden = round(width * mlp_ratio)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads, dropout, attention)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def modulation(self, cond_BW: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """What the block computes once per sequence: γ₁, γ₂, a₁, a₂, b₁, b₂ (B, 1, 6W) from the class
        embedding, and the attention's `constants`."""
        return self.ada(cond_BW)[:, None], self.attn.constants()

    def forward(self, x_BLW: torch.Tensor, mod: tuple[torch.Tensor, tuple], mask_LL: torch.Tensor | None = None,
                cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        mod_B1X, constants = mod
        g1, g2, a1, a2, b1, b2 = mod_B1X.chunk(6, dim=-1)  # 6×(B, 1, W)
        x_BLW = x_BLW + self.drop_path(g1 * self.attn(self.norm(x_BLW) * (1 + a1) + b1, mask_LL, cache, constants))
        return x_BLW + self.drop_path(g2 * self.mlp(self.norm(x_BLW) * (1 + a2) + b2))


class Generator(nn.Module):
    """Class-conditional AR transformer over tokenizer indices in the layout `gcfg.layout`.

    Args: gcfg (layout, depth, width, heads, ...), qcfg (the tokenizer's scales, branches, codebook size,
    code dim), num_classes (labels 0..num_classes-1; `num_classes` itself is the null class).
    """

    level_L: torch.Tensor  # buffers: the layout's per-position ids (L,) and block mask (L, L)
    site_L: torch.Tensor
    branch_L: torch.Tensor
    mask_LL: torch.Tensor

    def __init__(self, gcfg: GeneratorConfig, qcfg: QuantizerConfig, num_classes: int):
        super().__init__()
        self.layout: Layout = build_layout(gcfg.layout, qcfg)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        layout, W, V = self.layout, gcfg.width, qcfg.codebook_size
        self.cfg, self.num_classes, self.null_class = gcfg, num_classes, num_classes
        self.scales, self.branches, self.codebook_size, self.code_dim = (
            layout.scales, layout.branches, layout.codebook_size, layout.code_dim)
        self.register_buffer("level_L", torch.tensor(layout.level), persistent=False)
        self.register_buffer("site_L", torch.tensor(layout.site), persistent=False)
        self.register_buffer("branch_L", torch.tensor(layout.branch), persistent=False)
        self.register_buffer("mask_LL", layout.block_mask(), persistent=False)

        self.class_emb = nn.Embedding(num_classes + 1, W)
        self.pos_start = nn.Parameter(torch.zeros(layout.steps[0][1], W))
        self.pos_emb = nn.Parameter(torch.zeros(max(layout.site) + 1, W))
        self.level_emb = nn.Embedding(len(self.scales), W)
        self.branch_emb = nn.Embedding(self.branches, W) if layout.embeds_branch else None
        self.word_embed = layout.input_embedding(W)
        rates = [gcfg.drop_path * i / max(1, gcfg.depth - 1) for i in range(gcfg.depth)]  # stochastic depth, linear
        self.blocks = nn.ModuleList(Block(W, gcfg.heads, gcfg.mlp_ratio, gcfg.dropout, gcfg.attention, rate)
                                    for rate in rates)
        self.head_norm = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.head = nn.Linear(W, layout.tokens_per_position * V)
        self.init_weights()
        self.static_kv: dict[tuple, tuple[torch.Tensor, list[StaticKVCache]]] = {}  # see `sampler.static_caches`

    @property
    def block_list(self) -> Sequence[Block]:
        """`blocks`, typed."""
        return cast(Sequence[Block], self.blocks)

    @property
    def length(self) -> int:
        """L, the sequence length."""
        return self.layout.length

    @property
    def steps(self) -> list[tuple[int, int]]:
        """(start, end) of each AR step."""
        return self.layout.steps

    @property
    def tokens_per_position(self) -> int:
        """G, the tokens predicted at each position."""
        return self.layout.tokens_per_position

    def init_weights(self, std: float = 0.02) -> None:
        """Linear / embeddings: truncated normal(std), zero biases; adaLN and head: zero (adaLN-Zero),
        so every block starts as the identity and the first logits are uniform. (`SelfAttention` starts its
        own q / v biases at zero and its log-scales at ln 4.)"""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_emb):
            nn.init.trunc_normal_(p, std=std)
        for lin in cast(list[nn.Linear], [b.ada[1] for b in self.block_list] + [self.head_ada[1], self.head]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------------- training path

    def inputs(self, indices: list[torch.Tensor], quantizer: Quantizer | None = None) -> torch.Tensor:
        """Teacher-forcing inputs of the steps after the first: (B, Σ_{i≥2} s_i², P·C) from the
        quantizer (folded, unfolded) or the previous tokens (B, K²−1) (raster)."""
        return self.layout.teacher_forcing_inputs(indices, quantizer)

    def drop_labels(self, labels_B: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null class with probability `class_dropout` (training only)."""
        if not self.training or self.cfg.class_dropout == 0:
            return labels_B
        drop_B = torch.rand(labels_B.shape, device=labels_B.device) < self.cfg.class_dropout
        return torch.where(drop_B, torch.full_like(labels_B, self.null_class), labels_B)

    def forward(self, labels_B: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, G, V) for labels (B,) (null class allowed) and `inputs(...)`.
        In training mode labels are dropped to the null class at rate `class_dropout`."""
        cond_BW = self.class_emb(self.drop_labels(labels_B))
        x_BLW = torch.cat([self.start_input(cond_BW), self.layout.embed_inputs(self.word_embed, inputs)], dim=1)
        x_BLW = x_BLW + self.position_terms(0, self.length)
        for block in self.block_list:
            x_BLW = block(x_BLW, block.modulation(cond_BW), self.mask_LL)
        return self.head_logits(x_BLW, self.head_modulation(cond_BW))

    def loss(self, logits_BLGV: torch.Tensor, indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy averaged over positions and branches, and token accuracy."""
        target = self.layout.targets(indices).reshape(-1)
        flat = logits_BLGV.reshape(-1, self.codebook_size).float()
        return F.cross_entropy(flat, target), (flat.argmax(-1) == target).float().mean()

    # ------------------------------------------------------------------------- shared pieces

    def start_input(self, cond_BW: torch.Tensor) -> torch.Tensor:
        """The first step's input: class embedding + start position embedding."""
        return cond_BW[:, None] + self.pos_start  # (B, n_first, W)

    def position_terms(self, start: int, end: int) -> torch.Tensor:
        """Position + level (+ branch) embeddings of positions start..end: (end − start, W)."""
        sl = slice(start, end)
        out = self.pos_emb[self.site_L[sl]] + self.level_emb(self.level_L[sl])
        return out + self.branch_emb(self.branch_L[sl]) if self.branch_emb is not None else out

    def head_modulation(self, cond_BW: torch.Tensor) -> torch.Tensor:
        return self.head_ada(cond_BW)[:, None]  # (B, 1, 2W)

    def head_logits(self, x_BlW: torch.Tensor, mod_B1X: torch.Tensor) -> torch.Tensor:
        """Logits (B, l, G, V) of the last block's output, under the head's modulation."""
        a, b = mod_B1X.chunk(2, dim=-1)  # 2×(B, 1, W)
        out = self.head(self.head_norm(x_BlW) * (1 + a) + b)
        return out.unflatten(-1, (self.tokens_per_position, self.codebook_size))  # (B, l, G, V)

    # ------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, labels_B: torch.Tensor | Sequence[int], quantizer: Quantizer | None = None, *,
               cfg_scale: float | None = None, top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, reference: list[torch.Tensor] | None = None,
               force_branches: Sequence[int] = (), n_scales: int | None = None, compiled: bool = False,
               return_logits: bool = False):
        """Sample token indices for class labels (B,) (moved to the model's device); the caller decodes
        them with the tokenizer.

        cfg_scale: guidance weight at the last scale, ramped linearly from 0 (see `sampler.guidance_weights`;
            0 = no guidance, no doubled batch); None → `cfg.cfg_scale`. With guidance the batch runs
            as 2B (conditional, then null class).
        top_k (≥ 1; k ≥ V disables), top_p (in (0, 1]; 1 disables): per branch; None → config
            (config top_k = 0 disables).
        generator: torch.Generator for reproducible sampling (on the model's device).
        reference, force_branches: teacher forcing (paper Fig. 8): the listed branches' tokens are
            taken from `reference` (indices [S × (B, P, s, s)], e.g. a reference image's) at every
            scale and only the other branches are sampled.
        n_scales: sample only the first n scales (a prefix the quantizer can decode); None = all.
        compiled: each step's blocks and head run through `torch.compile` (CUDA graphs on a GPU:
            mode "reduce-overhead") over a `StaticKVCache`, one graph per query length, compiled on the
            first call of each batch size and precision. The same distribution; a seed's draws can differ
            where the compiled arithmetic rounds otherwise.
        Returns indices [n_scales × (B, P, s, s)], and with `return_logits` also the guided logits of
        every step [(B, l, G, V)] before filtering.
        """
        labels_B = torch.as_tensor(labels_B, device=self.class_emb.weight.device)
        self._check_labels(labels_B)
        settings = sampler.SamplingSettings.resolve(self.cfg, self.layout, cfg_scale, top_k, top_p, n_scales,
                                                    return_logits, compiled)
        if self.layout.uses_quantizer:
            self.layout.check_quantizer(quantizer)
        forcing = sampler.Forcing.resolve(self.layout, reference, force_branches, labels_B)
        was_training = self.training
        self.eval()
        try:
            indices, step_logits = sampler.sample(self, labels_B, quantizer, settings, forcing, generator)
        finally:
            self.train(was_training)
        return (indices, step_logits) if return_logits else indices

    def _check_labels(self, labels_B: torch.Tensor) -> None:
        if labels_B.ndim != 1 or labels_B.dtype != torch.long:
            raise ValueError(f"labels: expected a 1-D long tensor, got {labels_B.dtype} {tuple(labels_B.shape)}")
        bad = labels_B[(labels_B < 0) | (labels_B >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"labels: unknown class index {int(bad[0])}; the model has {self.num_classes} "
                             f"classes (0..{self.num_classes - 1})")

    def blocks_and_head(self, x_BlW: torch.Tensor, mods: list[tuple], head_mod_B1X: torch.Tensor,
                        caches: Sequence[KVCache | StaticKVCache], mask_lL: torch.Tensor | None) -> torch.Tensor:
        """One sampling step after the input: every block over its cache, then the head: (B, l, G, V)."""
        for block, mod, cache in zip(self.blocks, mods, caches):
            x_BlW = block(x_BlW, mod, mask_lL, cache)
        return self.head_logits(x_BlW, head_mod_B1X)


def parameter_counts(model: Generator) -> dict[str, int]:
    """Parameters in the transformer blocks (the paper's #Para convention) and in the whole model."""
    return {"blocks": sum(p.numel() for p in model.blocks.parameters()),
            "total": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- training objective

class GeneratorObjective(Objective):
    """The trainer's objective for the generator (CONTRACTS.md): one phase, "model".

    Batches are (tokens (B, T) long in `flatten_indices` order, labels (B,) long), as yielded by
    `data.TokenDataset`. The quantizer (folded / unfolded layouts) is frozen and kept in eval mode.
    """

    phases = ("model",)

    def __init__(self, generator: Generator, quantizer: ProductQuantizer | None = None):
        super().__init__()
        self.generator = generator
        if generator.layout.uses_quantizer:
            generator.layout.check_quantizer(quantizer)
            assert quantizer is not None  # check_quantizer refuses None
            quantizer.requires_grad_(False).eval()
        self.quantizer = quantizer

    def train(self, mode: bool = True) -> GeneratorObjective:
        super().train(mode)
        if self.quantizer is not None:
            self.quantizer.eval()
        return self

    @property
    def ema_target(self) -> Generator:
        return self.generator

    def parameters_for(self, phase: str) -> list[nn.Parameter]:
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r}; phases are {self.phases}")
        return list(self.generator.parameters())

    def forward(self, batch, phase: str, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        tokens_BT, labels_B = batch
        g = self.generator
        indices = unflatten_indices(tokens_BT, g.scales, g.branches)
        logits_BLGV = g(labels_B, g.inputs(indices, self.quantizer))
        loss, acc = g.loss(logits_BLGV, indices)
        return loss, {"acc": acc.detach()}  # a tensor: the trainer reads logs when it logs; it logs the loss itself
