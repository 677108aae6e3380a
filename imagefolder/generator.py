"""The autoregressive generator: a VAR-style next-scale transformer over folded tokens (ImageFolder),
the unfolded baseline and the next-token raster baseline, one code path chosen by `cfg.generator.mode`.

Notation: S scales s_1..s_S, P branches, codebook size V, code dim C, width W, K = s_S.
Sequence layouts (L positions, G tokens predicted per position):

- folded:   one position per site of each scale, L = Σ s_i², G = P (the head emits P·V logits and the
            P tokens are sampled in parallel). Scale i+1's input is the quantizer's cumulative f̂ of all
            branches after scale i, area-downsampled, P·C channels → linear → W.
- unfolded: one position per branch per site, scale-major then branch-major, L = P·Σ s_i², G = 1;
            input = that branch's C channels → linear → W, plus a branch embedding.
- raster:   next-token prediction over a single-scale single-branch tokenizer (scales=[K], P=1),
            L = K², G = 1; input = embedding of the previous token (LlamaGen-like).

Attention is block-causal: a position sees its own block and all earlier blocks, where the blocks are
the scales (folded, unfolded) or single tokens (raster, i.e. causal). The first block's input is the
start token: class embedding + a learned start position embedding. Every position also gets a learned
position embedding and a level (scale) embedding. Blocks are GPT-2 style with adaptive layer norm on
the class embedding (adaLN-Zero init); class dropout to a null class trains classifier-free guidance.
Loss: cross-entropy averaged over positions and branches. Paper model (depth 17, width 1088, 2×4096
head): 362.5M parameters in the blocks (the paper's #Para ≈ 362M), 375.3M in total.

Sampling (`Generator.sample`) uses a KV cache; guidance runs as a 2B batch with guided logits
cond + t·(cond − uncond), t ramped linearly from 0 at the first scale to `cfg_scale` at the last, so
cfg_scale = 0 is no guidance (VAR / official ImageFolder convention; LlamaGen's scale is 1 + t); the
P tokens of a position are drawn in parallel with top-k then top-p applied to each branch separately.

The generator knows the tokenizer only through the quantizer's public conversions (CONTRACTS.md):
`teacher_forcing_inputs`, `next_input` and the attributes `scales`, `branches`, `codebook_size`,
`code_dim`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

from .checkpoint import atomic_write_bytes
from .config import ConfigError, GeneratorConfig, QuantizerConfig, token_count

MODES = ("folded", "unfolded", "raster")


# ----------------------------------------------------------------------------- token layout helpers

def flatten_indices(indices: list[torch.Tensor]) -> torch.Tensor:
    """[S × (B, P, s, s)] → (B, P·Σ s²): scale-major, then branch, then row-major sites."""
    return torch.cat([idx.flatten(1) for idx in indices], dim=1)


def unflatten_indices(tokens_BT: torch.Tensor, scales: Sequence[int], branches: int) -> list[torch.Tensor]:
    """Inverse of `flatten_indices`: (B, P·Σ s²) → [S × (B, P, s, s)]."""
    expected = branches * token_count(list(scales))
    if tokens_BT.ndim != 2 or tokens_BT.shape[1] != expected:
        raise ValueError(f"flat tokens: expected shape (B, {expected}) for scales {list(scales)} and "
                         f"{branches} branches, got {tuple(tokens_BT.shape)}")
    out, start = [], 0
    for s in scales:
        n = branches * s * s
        out.append(tokens_BT[:, start:start + n].reshape(-1, branches, s, s))
        start += n
    return out


# ----------------------------------------------------------------------------- sampling helpers

def sample_tokens(logits: torch.Tensor, top_k: int | None = None, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one token per row of `logits` (..., V) with top-k then top-p filtering, each row alone.

    Every row (one branch of one position) is filtered on its own: top-k keeps the k largest logits
    (None or k ≥ V: all); top-p then keeps the smallest prefix of those, by decreasing probability
    renormalised over the kept set, whose mass reaches p (p = 1: all). Returns (...) long.
    """
    V = logits.shape[-1]
    flat_NV = logits.reshape(-1, V).float()
    if top_k is not None and top_k < V:
        vals_Nk, order_Nk = flat_NV.topk(top_k, dim=-1)  # sorted, largest first
    else:
        vals_Nk, order_Nk = flat_NV.sort(dim=-1, descending=True)
    if top_p < 1.0:
        probs_Nk = vals_Nk.softmax(dim=-1)
        mass_before_Nk = probs_Nk.cumsum(dim=-1) - probs_Nk  # the top token always has 0 < p
        vals_Nk = vals_Nk.masked_fill(mass_before_Nk >= top_p, float("-inf"))
    pick_N1 = torch.multinomial(vals_Nk.softmax(dim=-1), 1, generator=generator)
    return order_Nk.gather(1, pick_N1).view(logits.shape[:-1])


def guidance_weights(cfg_scale: float, num_scales: int) -> list[float]:
    """Per-scale guidance weight t_i, ramped linearly from 0 at the first scale to `cfg_scale` at the
    last (one scale: constant `cfg_scale`). Guided logits = cond + t·(cond − uncond), so t = 0 is no
    guidance (VAR / official ImageFolder convention; the LlamaGen-style scale is 1 + t)."""
    if num_scales == 1:
        return [cfg_scale]
    return [cfg_scale * i / (num_scales - 1) for i in range(num_scales)]


# ----------------------------------------------------------------------------- transformer

class KVCache:
    """Keys and values of the positions seen so far, preallocated for `length` positions."""

    def __init__(self, length: int):
        self.length, self.n = length, 0
        self.k_BHLd: torch.Tensor | None = None
        self.v_BHLd: torch.Tensor | None = None

    def extend(self, k_BHld: torch.Tensor, v_BHld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values (B, H, l, d); return all so far (B, H, n, d)."""
        if self.k_BHLd is None:
            B, H, _, d = k_BHld.shape
            self.k_BHLd = k_BHld.new_empty(B, H, self.length, d)
            self.v_BHLd = v_BHld.new_empty(B, H, self.length, d)
        end = self.n + k_BHld.shape[2]
        self.k_BHLd[:, :, self.n:end] = k_BHld
        self.v_BHLd[:, :, self.n:end] = v_BHld
        self.n = end
        return self.k_BHLd[:, :, :end], self.v_BHLd[:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional boolean mask (True = may attend) and KV cache."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLW: torch.Tensor, mask_LL: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, L, W = x_BLW.shape
        q, k, v = self.qkv(x_BLW).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # 3×(B,H,L,d)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, H, n, d)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(o.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    """Pre-norm transformer block whose two layer norms and residual gates are set by the class
    embedding (adaptive layer norm): x += γ₁·attn(LN(x)(1+a₁)+b₁); x += γ₂·mlp(LN(x)(1+a₂)+b₂)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def modulation(self, cond_BW: torch.Tensor) -> torch.Tensor:
        """(B, 1, 6W): γ₁, γ₂, a₁, a₂, b₁, b₂ from the class embedding (computed once per sequence)."""
        return self.ada(cond_BW)[:, None]

    def forward(self, x_BLW: torch.Tensor, mod_B1X: torch.Tensor, mask_LL: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        g1, g2, a1, a2, b1, b2 = mod_B1X.chunk(6, dim=-1)  # 6×(B, 1, W)
        x_BLW = x_BLW + g1 * self.attn(self.norm(x_BLW) * (1 + a1) + b1, mask_LL, cache)
        return x_BLW + g2 * self.mlp(self.norm(x_BLW) * (1 + a2) + b2)


class Generator(nn.Module):
    """Class-conditional AR transformer over tokenizer indices (folded, unfolded or raster layout).

    Args: gcfg (mode, depth, width, heads, ...), qcfg (the tokenizer's scales, branches, codebook size,
    code dim), num_classes (labels 0..num_classes-1; `num_classes` itself is the null class).
    """

    def __init__(self, gcfg: GeneratorConfig, qcfg: QuantizerConfig, num_classes: int):
        super().__init__()
        if gcfg.mode not in MODES:
            raise ConfigError(f"generator.mode: {gcfg.mode!r} is not one of {MODES}")
        if gcfg.mode == "raster" and (len(qcfg.scales) != 1 or qcfg.branches != 1):
            raise ConfigError(f"generator.mode: 'raster' needs a single-scale, single-branch tokenizer "
                              f"(quantizer.scales=[K], quantizer.branches=1), got scales={qcfg.scales}, "
                              f"branches={qcfg.branches}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.cfg = gcfg
        self.mode, self.num_classes, self.null_class = gcfg.mode, num_classes, num_classes
        self.scales, self.branches = list(qcfg.scales), qcfg.branches
        self.codebook_size, self.code_dim = qcfg.codebook_size, qcfg.code_dim
        W, P, V = gcfg.width, self.branches, self.codebook_size
        self.tokens_per_position = P if self.mode == "folded" else 1  # G

        block, level, site, branch = self._layout()
        self.length = len(block)
        # (start, end) of each AR step and its scale index (raster: every step is scale 0)
        starts = [i for i in range(self.length) if i == 0 or block[i] != block[i - 1]]
        self.steps = list(zip(starts, starts[1:] + [self.length]))
        self.step_scale = [level[i] for i in starts]
        block_L = torch.tensor(block)
        self.register_buffer("level_L", torch.tensor(level), persistent=False)
        self.register_buffer("site_L", torch.tensor(site), persistent=False)
        self.register_buffer("branch_L", torch.tensor(branch), persistent=False)
        self.register_buffer("mask_LL", block_L[:, None] >= block_L[None, :], persistent=False)

        n_first = self.steps[0][1]
        self.class_emb = nn.Embedding(num_classes + 1, W)
        self.pos_start = nn.Parameter(torch.zeros(n_first, W))
        self.pos_emb = nn.Parameter(torch.zeros(max(site) + 1, W))
        self.level_emb = nn.Embedding(len(self.scales), W)
        self.branch_emb = nn.Embedding(P, W) if self.mode == "unfolded" else None
        if self.mode == "raster":
            self.word_embed: nn.Module = nn.Embedding(V, W)
        else:
            self.word_embed = nn.Linear(P * self.code_dim if self.mode == "folded" else self.code_dim, W)
        self.blocks = nn.ModuleList(Block(W, gcfg.heads, gcfg.mlp_ratio, gcfg.dropout) for _ in range(gcfg.depth))
        self.head_norm = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.head = nn.Linear(W, self.tokens_per_position * V)
        self.init_weights()

    def _layout(self) -> tuple[list[int], ...]:
        """Per-position ids (L each): attention block, level (scale), site (position-table row), branch."""
        rows: list[tuple[int, int, int, int]] = []
        if self.mode == "raster":
            rows = [(t, 0, t, 0) for t in range(self.scales[0] ** 2)]
        else:
            offset = 0
            for i, s in enumerate(self.scales):
                for p in range(self.branches if self.mode == "unfolded" else 1):
                    rows += [(i, i, offset + j, p) for j in range(s * s)]
                offset += s * s
        return tuple(list(col) for col in zip(*rows))

    def init_weights(self, std: float = 0.02) -> None:
        """Linear / embeddings: truncated normal(std), zero biases; adaLN and head: zero (adaLN-Zero),
        so every block starts as the identity and the first logits are uniform."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_emb):
            nn.init.trunc_normal_(p, std=std)
        for lin in [b.ada[1] for b in self.blocks] + [self.head_ada[1], self.head]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------------- checks

    def check_quantizer(self, quantizer) -> None:
        """Raise ValueError unless the quantizer's scales, branches, codebook size and code dim match."""
        if quantizer is None:
            raise ValueError(f"generator mode {self.mode!r} needs the tokenizer's quantizer for its inputs")
        ours = dict(scales=self.scales, branches=self.branches, codebook_size=self.codebook_size,
                    code_dim=self.code_dim)
        missing = [k for k in ours if not hasattr(quantizer, k)]
        if missing:
            raise ValueError(f"quantizer {type(quantizer).__name__} lacks the attributes {missing} that "
                             f"CONTRACTS.md promises (scales, branches, codebook_size, code_dim)")
        theirs = {k: (list(getattr(quantizer, k)) if k == "scales" else getattr(quantizer, k)) for k in ours}
        bad = [f"{k}: model {ours[k]} vs quantizer {theirs[k]}" for k in ours if ours[k] != theirs[k]]
        if bad:
            raise ValueError("quantizer does not match the generator: " + "; ".join(bad))

    def check_indices(self, indices: list[torch.Tensor]) -> None:
        """Raise ValueError unless indices are S long tensors (B, P, s_i, s_i) with values in [0, V)."""
        if len(indices) != len(self.scales):
            raise ValueError(f"indices: expected {len(self.scales)} scales {self.scales}, got {len(indices)}")
        B = indices[0].shape[0]
        for i, (idx, s) in enumerate(zip(indices, self.scales)):
            if tuple(idx.shape) != (B, self.branches, s, s):
                raise ValueError(f"indices[{i}]: expected shape {(B, self.branches, s, s)} for scales "
                                 f"{self.scales}, got {tuple(idx.shape)}")
            if idx.dtype != torch.long:
                raise ValueError(f"indices[{i}]: expected dtype torch.long, got {idx.dtype}")
        lo, hi = flatten_indices(indices).aminmax()  # one device sync for all scales
        if int(lo) < 0 or int(hi) >= self.codebook_size:
            raise ValueError(f"indices: values must be in [0, {self.codebook_size}) (the codebook size), got "
                             f"range [{int(lo)}, {int(hi)}]")

    def _check_labels(self, labels_B: torch.Tensor, allow_null: bool) -> None:
        hi = self.num_classes + int(allow_null)
        if labels_B.ndim != 1 or labels_B.dtype != torch.long:
            raise ValueError(f"labels: expected a 1-D long tensor, got {labels_B.dtype} {tuple(labels_B.shape)}")
        bad = labels_B[(labels_B < 0) | (labels_B >= hi)]
        if bad.numel():
            raise ValueError(f"labels: unknown class index {int(bad[0])}; the model has {self.num_classes} "
                             f"classes (0..{self.num_classes - 1})" + (f", {self.null_class} = null" if allow_null else ""))

    # ------------------------------------------------------------------------- training path

    def inputs(self, indices: list[torch.Tensor], quantizer=None) -> torch.Tensor:
        """Teacher-forcing inputs after the start block: (B, Σ_{i≥2} s_i², P·C) from the quantizer
        (folded, unfolded) or the previous tokens (B, K²−1) (raster)."""
        self.check_indices(indices)
        if self.mode == "raster":
            return indices[0].flatten(1)[:, :-1]
        self.check_quantizer(quantizer)
        with torch.no_grad():
            return quantizer.teacher_forcing_inputs(indices)

    def targets(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Indices in sequence order: (B, L, G)."""
        if self.mode == "folded":
            return torch.cat([idx.flatten(2).transpose(1, 2) for idx in indices], dim=1)  # (B, L, P)
        return flatten_indices(indices)[..., None]  # (B, L, 1): scale, branch, site order

    def drop_labels(self, labels_B: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null class with probability `class_dropout` (training only)."""
        if not self.training or self.cfg.class_dropout == 0:
            return labels_B
        drop_B = torch.rand(labels_B.shape, device=labels_B.device) < self.cfg.class_dropout
        return torch.where(drop_B, torch.full_like(labels_B, self.null_class), labels_B)

    def forward(self, labels_B: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, G, V) for labels (B,) (null class allowed) and `inputs(...)`.
        In training mode labels are dropped to the null class at rate `class_dropout`."""
        self._check_labels(labels_B, allow_null=True)
        cond_BW = self.class_emb(self.drop_labels(labels_B))
        x_BLW = torch.cat([self._start(cond_BW), self._embed_inputs(inputs)], dim=1)
        x_BLW = x_BLW + self._position_terms(0, self.length)
        for block in self.blocks:
            x_BLW = block(x_BLW, block.modulation(cond_BW), self.mask_LL)
        return self._logits(x_BLW, self._head_modulation(cond_BW))

    def loss(self, logits_BLGV: torch.Tensor, indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy averaged over positions and branches, and token accuracy."""
        target = self.targets(indices).reshape(-1)
        flat = logits_BLGV.reshape(-1, self.codebook_size).float()
        return F.cross_entropy(flat, target), (flat.argmax(-1) == target).float().mean()

    # ------------------------------------------------------------------------- shared pieces

    def _start(self, cond_BW: torch.Tensor) -> torch.Tensor:
        return cond_BW[:, None] + self.pos_start  # (B, n_first, W)

    def _position_terms(self, start: int, end: int) -> torch.Tensor:
        """Position + level (+ branch) embeddings of positions start..end: (end − start, W)."""
        sl = slice(start, end)
        out = self.pos_emb[self.site_L[sl]] + self.level_emb(self.level_L[sl])
        return out + self.branch_emb(self.branch_L[sl]) if self.branch_emb is not None else out

    def _embed_step(self, inp: torch.Tensor) -> torch.Tensor:
        """One block of inputs → (B, l, W): (B, s², P·C) for folded/unfolded, (B, n) tokens for raster."""
        if self.mode == "unfolded":
            x_BsPW = self.word_embed(inp.unflatten(-1, (self.branches, self.code_dim)))  # (B, s², P, W)
            return x_BsPW.transpose(1, 2).flatten(1, 2)  # (B, P·s², W), branch-major like the layout
        return self.word_embed(inp)

    def _embed_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.mode != "unfolded":
            return self._embed_step(inputs)
        chunks = inputs.split([s * s for s in self.scales[1:]], dim=1)
        return torch.cat([self._embed_step(c) for c in chunks], dim=1)

    def _head_modulation(self, cond_BW: torch.Tensor) -> torch.Tensor:
        return self.head_ada(cond_BW)[:, None]  # (B, 1, 2W)

    def _logits(self, x_BlW: torch.Tensor, mod_B1X: torch.Tensor) -> torch.Tensor:
        a, b = mod_B1X.chunk(2, dim=-1)  # 2×(B, 1, W)
        out = self.head(self.head_norm(x_BlW) * (1 + a) + b)
        return out.unflatten(-1, (self.tokens_per_position, self.codebook_size))  # (B, l, G, V)

    # ------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, labels_B: torch.Tensor | Sequence[int], quantizer=None, *, cfg_scale: float | None = None,
               top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, reference: list[torch.Tensor] | None = None,
               force_branches: Sequence[int] = (), n_scales: int | None = None, use_cache: bool = True,
               return_logits: bool = False):
        """Sample token indices for class labels (B,) (moved to the model's device); the caller decodes
        them with the tokenizer.

        cfg_scale: guidance weight at the last scale, ramped linearly from 0 (see `guidance_weights`;
            0 = no guidance, no doubled batch); None → `cfg.cfg_scale`. With guidance the batch runs
            as 2B (conditional, then null class).
        top_k (≥ 1; k ≥ V disables), top_p (in (0, 1]; 1 disables): per branch; None → config
            (config top_k = 0 disables).
        generator: torch.Generator for reproducible sampling (on the model's device).
        reference, force_branches: teacher forcing (paper Fig. 8): the listed branches' tokens are
            taken from `reference` (indices [S × (B, P, s, s)], e.g. a reference image's) at every
            scale and only the other branches are sampled.
        n_scales: sample only the first n scales (a prefix the quantizer can decode); None = all.
        use_cache: KV cache (default); False recomputes the whole prefix at every step (a check).
        Returns indices [n_scales × (B, P, s, s)], and with `return_logits` also the guided logits of
        every step [(B, l, G, V)] before filtering.
        """
        labels_B = torch.as_tensor(labels_B, device=self.class_emb.weight.device)
        self._check_labels(labels_B, allow_null=False)
        cfg_scale = self.cfg.cfg_scale if cfg_scale is None else cfg_scale
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be ≥ 0 (0 = no guidance), got {cfg_scale}")
        if top_k is None:
            top_k = self.cfg.top_k or self.codebook_size
        elif top_k <= 0:
            raise ValueError(f"top_k must be ≥ 1 (pass k ≥ {self.codebook_size} to disable), got {top_k}")
        top_p = self.cfg.top_p if top_p is None else top_p
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        n_scales = len(self.scales) if n_scales is None else n_scales
        if not 1 <= n_scales <= len(self.scales):
            raise ValueError(f"n_scales must be in [1, {len(self.scales)}], got {n_scales}")
        B = labels_B.shape[0]
        if self.mode != "raster":
            self.check_quantizer(quantizer)
        force = sorted(set(force_branches))
        if force:
            if self.mode == "raster":
                raise ValueError("teacher forcing needs a multi-branch tokenizer; raster mode has one branch")
            if reference is None:
                raise ValueError("force_branches needs `reference` indices")
            if not all(0 <= p < self.branches for p in force):
                raise ValueError(f"force_branches {force} must be in [0, {self.branches})")
            self.check_indices(reference)
            if reference[0].shape[0] != B:
                raise ValueError(f"reference batch {reference[0].shape[0]} != number of labels {B}")

        was_training = self.training
        self.eval()
        try:
            return self._sample(labels_B, quantizer, cfg_scale, top_k, top_p, generator, reference, force,
                                n_scales, use_cache, return_logits)
        finally:
            self.train(was_training)

    def _sample(self, labels_B, quantizer, cfg_scale, top_k, top_p, generator, reference, force, n_scales,
                use_cache, return_logits):
        B, guided = labels_B.shape[0], cfg_scale > 0
        weights = guidance_weights(cfg_scale, len(self.scales))
        if guided:
            labels_B = torch.cat([labels_B, torch.full_like(labels_B, self.null_class)])  # (2B,)
        cond_BW = self.class_emb(labels_B)
        mods = [block.modulation(cond_BW) for block in self.blocks]
        head_mod = self._head_modulation(cond_BW)
        n_steps = len(self.steps) if self.mode == "raster" else n_scales
        caches = [KVCache(self.steps[n_steps - 1][1]) for _ in self.blocks] if use_cache else None
        x_BlW = self._start(cond_BW)
        seen_BLW = x_BlW[:, :0]  # the whole prefix, for the no-cache path
        K = self.scales[-1]
        f_hat = cond_BW.new_zeros(B, self.branches, self.code_dim, K, K)
        indices, step_logits, raster_tokens = [], [], []
        for k in range(n_steps):
            start, end = self.steps[k]
            x_BlW = x_BlW + self._position_terms(start, end)
            if use_cache:
                h_BlW = x_BlW
                for block, mod, cache in zip(self.blocks, mods, caches):
                    h_BlW = block(h_BlW, mod, None, cache)
            else:
                seen_BLW = h_BlW = torch.cat([seen_BLW, x_BlW], dim=1)
                for block, mod in zip(self.blocks, mods):
                    h_BlW = block(h_BlW, mod, self.mask_LL[:end, :end])
                h_BlW = h_BlW[:, start:]
            logits_BlGV = self._logits(h_BlW, head_mod).float()
            if guided:
                cond, uncond = logits_BlGV.chunk(2)
                logits_BlGV = cond + weights[self.step_scale[k]] * (cond - uncond)
            if return_logits:
                step_logits.append(logits_BlGV)
            tokens_BlG = sample_tokens(logits_BlGV, top_k, top_p, generator)
            last = k == n_steps - 1
            if self.mode == "raster":
                raster_tokens.append(tokens_BlG[:, :, 0])
                nxt = None if last else tokens_BlG[:, :, 0]  # (B, 1)
            else:
                s = self.scales[k]
                if self.mode == "folded":
                    idx_BPss = tokens_BlG.transpose(1, 2).reshape(B, self.branches, s, s)
                else:
                    idx_BPss = tokens_BlG.reshape(B, self.branches, s, s)
                if force:
                    idx_BPss[:, force] = reference[k][:, force]
                indices.append(idx_BPss)
                nxt = None
                if not last:
                    f_hat, nxt = quantizer.next_input(f_hat, k, idx_BPss)  # nxt (B, s_{k+1}², P·C)
            if nxt is not None:
                x_BlW = self._embed_step(nxt)
                if guided:
                    x_BlW = x_BlW.repeat(2, 1, 1)
        if self.mode == "raster":
            indices = [torch.cat(raster_tokens, dim=1).view(B, 1, K, K)]
        return (indices, step_logits) if return_logits else indices


def parameter_counts(model: Generator) -> dict[str, int]:
    """Parameters in the transformer blocks (the paper's #Para convention) and in the whole model."""
    return {"blocks": sum(p.numel() for p in model.blocks.parameters()),
            "total": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- training objective

class GeneratorObjective(nn.Module):
    """The trainer's objective for the generator (CONTRACTS.md): one phase, "model".

    Batches are (tokens (B, T) long in `flatten_indices` order, labels (B,) long), as yielded by
    `TokenDataset`. The quantizer (folded/unfolded modes) is frozen and kept in eval mode.
    """

    phases = ("model",)

    def __init__(self, generator: Generator, quantizer: nn.Module | None = None):
        super().__init__()
        self.generator = generator
        if generator.mode != "raster":
            generator.check_quantizer(quantizer)
            quantizer.requires_grad_(False).eval()
        self.quantizer = quantizer

    def train(self, mode: bool = True) -> "GeneratorObjective":
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

    def forward(self, batch, phase: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        tokens_BT, labels_B = batch
        g = self.generator
        indices = unflatten_indices(tokens_BT, g.scales, g.branches)
        logits_BLGV = g(labels_B, g.inputs(indices, self.quantizer))
        loss, acc = g.loss(logits_BLGV, indices)
        return loss, {"acc": acc.item()}  # the trainer logs the loss itself


# ----------------------------------------------------------------------------- token cache

class TokenCacheMismatch(ValueError):
    """A token cache was made by another tokenizer (or another scale / branch / codebook layout)."""


class TokenDataset(torch.utils.data.Dataset):
    """Cached token indices of a data set and their labels, tied to the tokenizer that made them.

    Item i: (tokens (T,) long in `flatten_indices` order, T = P·Σ s², label () long).
    """

    def __init__(self, tokens_NT: torch.Tensor, labels_N: torch.Tensor, scales: Sequence[int], branches: int,
                 codebook_size: int, fingerprint: str):
        self.scales, self.branches = list(scales), branches
        self.codebook_size, self.fingerprint = codebook_size, fingerprint
        unflatten_indices(tokens_NT[:1], self.scales, branches)  # shape check
        if labels_N.shape != (tokens_NT.shape[0],):
            raise ValueError(f"labels: expected shape ({tokens_NT.shape[0]},), got {tuple(labels_N.shape)}")
        if tokens_NT.numel() and not 0 <= int(tokens_NT.min()) <= int(tokens_NT.max()) < codebook_size:
            raise ValueError(f"tokens: values must be in [0, {codebook_size}) (the codebook size)")
        self.tokens_NT, self.labels_N = tokens_NT.long(), labels_N.long()

    def __len__(self) -> int:
        return self.tokens_NT.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens_NT[i], self.labels_N[i]

    @classmethod
    def encode(cls, encode: Callable[[torch.Tensor], list[torch.Tensor]],
               batches: Iterable[tuple[torch.Tensor, torch.Tensor]], codebook_size: int,
               fingerprint: str) -> "TokenDataset":
        """Tokenize (images, labels) batches with `encode(images) -> [S × (B, P, s, s)]`."""
        tokens, labels, shapes = [], [], None
        with torch.no_grad():
            for images, y in batches:
                idx = encode(images)
                shapes = [tuple(t.shape[1:]) for t in idx]
                tokens.append(flatten_indices(idx).cpu())
                labels.append(y.cpu())
        if shapes is None:
            raise ValueError("no batches to encode")
        return cls(torch.cat(tokens), torch.cat(labels), [s[-1] for s in shapes], shapes[0][0],
                   codebook_size, fingerprint)

    def indices(self, rows: torch.Tensor | slice) -> list[torch.Tensor]:
        """Indices [S × (n, P, s, s)] of the selected rows."""
        return unflatten_indices(self.tokens_NT[rows], self.scales, self.branches)

    def _meta(self) -> dict[str, str]:
        return {"scales": json.dumps(self.scales), "branches": str(self.branches),
                "codebook_size": str(self.codebook_size), "fingerprint": self.fingerprint}

    def save(self, path: str | Path) -> None:
        """Write a safetensors file atomically (a unique temporary file, then rename)."""
        atomic_write_bytes(path, save({"tokens": self.tokens_NT.contiguous(), "labels": self.labels_N.contiguous()},
                                      metadata=self._meta()))

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None) -> "TokenDataset":
        """Read a cache; with `fingerprint`, raise TokenCacheMismatch if another tokenizer made it."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise TokenCacheMismatch(f"{path}: token cache made by tokenizer {meta['fingerprint']}, but the "
                                     f"current tokenizer is {fingerprint}; delete the cache to re-encode")
        data = load_file(str(path))
        return cls(data["tokens"], data["labels"], json.loads(meta["scales"]), int(meta["branches"]),
                   int(meta["codebook_size"]), meta["fingerprint"])

    def check_compatible(self, generator: Generator, fingerprint: str | None = None) -> None:
        """Raise TokenCacheMismatch if the cache's layout (or tokenizer) differs from the generator's."""
        ours = (self.scales, self.branches, self.codebook_size)
        theirs = (generator.scales, generator.branches, generator.codebook_size)
        if ours != theirs:
            raise TokenCacheMismatch(f"token cache has (scales, branches, codebook_size) = {ours}, the "
                                     f"generator expects {theirs}")
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise TokenCacheMismatch(f"token cache made by tokenizer {self.fingerprint}, current is {fingerprint}")
