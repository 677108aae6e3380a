"""The autoregressive generator: a VAR-style next-scale transformer over a token layout (`layouts.py`:
folded (ImageFolder), unfolded, and the next-token raster baseline), chosen by `cfg.generator.mode`.

The layout says what the sequence is (positions, AR steps, inputs, targets); this module holds the
transformer and the sampling loop. The first step's input is the start token: class embedding + a
learned start position embedding. Every position also gets a learned position embedding and a level
(scale) embedding (and a branch embedding where the layout asks). Blocks are GPT-2 style with adaptive
layer norm on the class embedding (adaLN-Zero init) and the layout's block-causal mask; class dropout to
a null class trains classifier-free guidance. Loss: cross-entropy averaged over positions and branches.
Paper model (depth 17, width 1088, 2×4096 head): 362.5M parameters in the blocks (the paper's #Para ≈
362M), 375.3M in total.

Sampling (`Generator.sample`) uses a KV cache (compiled: a `StaticKVCache`, for CUDA graphs); guidance
runs as a 2B batch with guided logits cond + t·(cond − uncond), t ramped linearly from 0 at the first
scale to `cfg_scale` at the last, so cfg_scale = 0 is no guidance (VAR / official ImageFolder convention;
LlamaGen's scale is 1 + t); the P tokens of a position are drawn in parallel with top-k then top-p
applied to each branch separately.

The generator knows the tokenizer only through the quantizer's public conversions (CONTRACTS.md):
`teacher_forcing_inputs`, `next_input` and the attributes `scales`, `branches`, `codebook_size`,
`code_dim`. Inputs are validated where they enter (`sample`, `GeneratorObjective`, `data.TokenDataset`),
not in the training step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GeneratorConfig, QuantizerConfig
from .layouts import Layout, Quantizer, build_layout, unflatten_indices


# ----------------------------------------------------------------------------- sampling helpers

# graphs a compiled sampler may hold for `Generator._blocks_and_head` (one per generator, query length, batch
# and precision; torch's default of 8 would fall back to eager past the eighth)
RECOMPILE_LIMIT = 256

def sample_tokens(logits: torch.Tensor, top_k: int | None = None, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one token per row of `logits` (..., V) with top-k then top-p filtering, each row alone.

    Every row (one branch of one position) is filtered on its own: top-k keeps the k largest logits
    (None or k ≥ V: all); top-p then keeps the smallest prefix of those, by decreasing probability
    renormalised over the kept set, whose mass reaches p (p = 1: all). Returns (...) long.

    The draw inverts each row's cumulative distribution at one uniform number: `torch.multinomial` draws
    an exponential per candidate, 20× slower at the cpu profile's last scale (12 800 rows × 256).
    """
    V = logits.shape[-1]
    flat_NV = logits.reshape(-1, V).float()
    if top_k is not None and top_k < V:
        vals_Nk, order_Nk = flat_NV.topk(top_k, dim=-1)  # sorted, largest first
    else:
        vals_Nk, order_Nk = flat_NV.sort(dim=-1, descending=True)
    probs_Nk = vals_Nk.softmax(dim=-1)
    cdf_Nk = probs_Nk.cumsum(dim=-1)
    kept_N1 = ((cdf_Nk - probs_Nk < top_p).sum(-1, keepdim=True) if top_p < 1.0  # the top token: mass 0 before it
               else torch.full_like(order_Nk[:, :1], order_Nk.shape[1]))
    mass_N1 = cdf_Nk.gather(1, kept_N1 - 1)  # of the kept prefix, which the draw renormalises over
    u_N1 = torch.rand(mass_N1.shape, generator=generator, device=mass_N1.device, dtype=mass_N1.dtype)
    pick_N1 = torch.searchsorted(cdf_Nk, u_N1 * mass_N1)  # the first candidate whose cdf reaches u · mass
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


class StaticKVCache:
    """A KV cache whose buffers keep their shapes and addresses from step to step and from call to call,
    for the compiled sampler (`Generator.sample(compiled=True)`; CUDA graphs on a GPU replay fixed addresses).

    A step writes its keys and values at positions `start` + 0..l−1, `start` being a one-element tensor the
    sampler sets before the step (shared by the caches of all blocks), and attention reads the whole buffer,
    the positions not yet written masked out by the block-causal mask rows of the step. So the steps of one
    query length l have the same shapes and one compiled graph, whichever their position; the buffers start
    at zero, so masked positions hold finite values."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, start: torch.Tensor):
        self.k_BHLd = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        self.v_BHLd = torch.zeros_like(self.k_BHLd)
        self.start = start
        for buffer in (self.k_BHLd, self.v_BHLd, start):
            torch._dynamo.mark_static_address(buffer)

    def extend(self, k_BHld: torch.Tensor, v_BHld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values (B, H, l, d) at `start`..; return the whole buffers (B, H, L, d)."""
        at_l = self.start + torch.arange(k_BHld.shape[2], device=k_BHld.device)
        self.k_BHLd.index_copy_(2, at_l, k_BHld)
        self.v_BHLd.index_copy_(2, at_l, v_BHld)
        return self.k_BHLd, self.v_BHLd


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_LL: torch.Tensor | None,
                     dropout_p: float) -> torch.Tensor:
    """`F.scaled_dot_product_attention` as two matmuls and a softmax (q, k, v (B, H, l | n, d)): under CPU
    bf16 autocast all three run in bf16 (CPU autocast keeps a softmax in its input's dtype), 1.6× faster
    than the fused CPU kernel in bf16 (which is slower than in float32). Same mask convention (True = may
    attend)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, l, n)
    if mask_LL is not None:
        scores = scores.masked_fill(~mask_LL, float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout_p) @ v  # (B, H, l, d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional boolean mask (True = may attend) and KV cache.
    `fused_attn` (as in timm's Attention): the fused kernel, else `matmul_attention`."""

    fused_attn = True

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLW: torch.Tensor, mask_LL: torch.Tensor | None = None,
                cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        B, L, W = x_BLW.shape
        q, k, v = self.qkv(x_BLW).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # 3×(B,H,L,d)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, H, n, d)
        dropout_p = self.dropout if self.training else 0.0
        o = (F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL, dropout_p=dropout_p) if self.fused_attn
             else matmul_attention(q, k, v, mask_LL, dropout_p))  # (B, H, l, d)
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
                cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        g1, g2, a1, a2, b1, b2 = mod_B1X.chunk(6, dim=-1)  # 6×(B, 1, W)
        x_BLW = x_BLW + g1 * self.attn(self.norm(x_BLW) * (1 + a1) + b1, mask_LL, cache)
        return x_BLW + g2 * self.mlp(self.norm(x_BLW) * (1 + a2) + b2)


@dataclass(frozen=True)
class SamplingSettings:
    """The checked settings of one `Generator.sample` call (see there)."""

    cfg_scale: float  # guidance weight at the last scale (0 = none, no doubled batch)
    top_k: int  # per branch; k ≥ V keeps every token
    top_p: float  # per branch, in (0, 1]; 1 keeps every token
    n_steps: int  # AR steps to run (those of the first n_scales scales)
    use_cache: bool = True  # KV cache; False recomputes the whole prefix at every step (a check)
    keep_logits: bool = False  # also return each step's guided logits
    compiled: bool = False  # blocks and head through torch.compile, over a StaticKVCache

    @classmethod
    def resolve(cls, gcfg: GeneratorConfig, layout: Layout, cfg_scale: float | None, top_k: int | None,
                top_p: float | None, n_scales: int | None, use_cache: bool, keep_logits: bool,
                compiled: bool = False) -> SamplingSettings:
        """Settings from `sample`'s arguments, None taken from the config; ValueError names a bad one."""
        cfg_scale = gcfg.cfg_scale if cfg_scale is None else cfg_scale
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be ≥ 0 (0 = no guidance), got {cfg_scale}")
        V = layout.codebook_size
        if top_k is None:
            top_k = gcfg.top_k or V
        elif top_k <= 0:
            raise ValueError(f"top_k must be ≥ 1 (pass k ≥ {V} to disable), got {top_k}")
        top_p = gcfg.top_p if top_p is None else top_p
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        S = len(layout.scales)
        n_scales = S if n_scales is None else n_scales
        if not 1 <= n_scales <= S:
            raise ValueError(f"n_scales must be in [1, {S}], got {n_scales}")
        if compiled and not use_cache:
            raise ValueError("compiled sampling runs over the KV cache: it needs use_cache=True")
        return cls(cfg_scale, top_k, top_p, layout.n_steps(n_scales), use_cache, keep_logits, compiled)


@dataclass(frozen=True)
class Forcing:
    """Teacher forcing while sampling: reference tokens in sequence order and which of them are kept."""

    tokens_BLG: torch.Tensor  # (B, L, G) long
    kept_LG: torch.Tensor  # (L, G) bool: the tokens of the forced branches


class Generator(nn.Module):
    """Class-conditional AR transformer over tokenizer indices in the layout `gcfg.mode`.

    Args: gcfg (mode, depth, width, heads, ...), qcfg (the tokenizer's scales, branches, codebook size,
    code dim), num_classes (labels 0..num_classes-1; `num_classes` itself is the null class).
    """

    def __init__(self, gcfg: GeneratorConfig, qcfg: QuantizerConfig, num_classes: int):
        super().__init__()
        self.layout: Layout = build_layout(gcfg.mode, qcfg)
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
        self.blocks = nn.ModuleList(Block(W, gcfg.heads, gcfg.mlp_ratio, gcfg.dropout) for _ in range(gcfg.depth))
        self.head_norm = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.head = nn.Linear(W, layout.tokens_per_position * V)
        self.init_weights()
        self._static: dict[tuple, tuple[torch.Tensor, list[StaticKVCache]]] = {}  # see `_static_caches`

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
        x_BLW = torch.cat([self._start(cond_BW), self.layout.embed_inputs(self.word_embed, inputs)], dim=1)
        x_BLW = x_BLW + self._position_terms(0, self.length)
        for block in self.blocks:
            x_BLW = block(x_BLW, block.modulation(cond_BW), self.mask_LL)
        return self._logits(x_BLW, self._head_modulation(cond_BW))

    def loss(self, logits_BLGV: torch.Tensor, indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy averaged over positions and branches, and token accuracy."""
        target = self.layout.targets(indices).reshape(-1)
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

    def _head_modulation(self, cond_BW: torch.Tensor) -> torch.Tensor:
        return self.head_ada(cond_BW)[:, None]  # (B, 1, 2W)

    def _logits(self, x_BlW: torch.Tensor, mod_B1X: torch.Tensor) -> torch.Tensor:
        a, b = mod_B1X.chunk(2, dim=-1)  # 2×(B, 1, W)
        out = self.head(self.head_norm(x_BlW) * (1 + a) + b)
        return out.unflatten(-1, (self.tokens_per_position, self.codebook_size))  # (B, l, G, V)

    # ------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, labels_B: torch.Tensor | Sequence[int], quantizer: Quantizer | None = None, *,
               cfg_scale: float | None = None, top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, reference: list[torch.Tensor] | None = None,
               force_branches: Sequence[int] = (), n_scales: int | None = None, use_cache: bool = True,
               compiled: bool = False, return_logits: bool = False):
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
        compiled: each step's blocks and head run through `torch.compile` (CUDA graphs on a GPU:
            mode "reduce-overhead") over a `StaticKVCache`, one graph per query length, compiled on the
            first call of each batch size and precision. The same distribution; a seed's draws can differ
            where the compiled arithmetic rounds otherwise.
        Returns indices [n_scales × (B, P, s, s)], and with `return_logits` also the guided logits of
        every step [(B, l, G, V)] before filtering.
        """
        labels_B = torch.as_tensor(labels_B, device=self.class_emb.weight.device)
        self._check_labels(labels_B)
        settings = SamplingSettings.resolve(self.cfg, self.layout, cfg_scale, top_k, top_p, n_scales, use_cache,
                                            return_logits, compiled)
        if self.layout.uses_quantizer:
            self.layout.check_quantizer(quantizer)
        forcing = self._forcing(reference, force_branches, labels_B)
        was_training = self.training
        self.eval()
        try:
            indices, step_logits = self._sample(labels_B, quantizer, settings, forcing, generator)
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

    def _forcing(self, reference: list[torch.Tensor] | None, force_branches: Sequence[int],
                 labels_B: torch.Tensor) -> Forcing | None:
        """The checked teacher forcing of `sample`, None without forced branches."""
        force = sorted(set(force_branches))
        if not force:
            return None
        if self.branches == 1:
            raise ValueError(f"teacher forcing needs a multi-branch tokenizer; this {self.layout.name} "
                             f"generator has one branch")
        if reference is None:
            raise ValueError("force_branches needs `reference` indices")
        if not all(0 <= p < self.branches for p in force):
            raise ValueError(f"force_branches {force} must be in [0, {self.branches})")
        self.layout.check_indices(reference)
        if reference[0].shape[0] != labels_B.shape[0]:
            raise ValueError(f"reference batch {reference[0].shape[0]} != number of labels {labels_B.shape[0]}")
        device = labels_B.device
        kept_LG = torch.isin(self.layout.token_branch().to(device), torch.tensor(force, device=device))
        return Forcing(self.layout.targets(reference).to(device), kept_LG)

    def _sample(self, labels_B: torch.Tensor, quantizer: Quantizer | None, s: SamplingSettings, forcing: Forcing | None,
                generator: torch.Generator | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The AR loop: (indices [n × (B, P, s, s)], guided logits of each step if `s.keep_logits`)."""
        B, guided = labels_B.shape[0], s.cfg_scale > 0
        weights = guidance_weights(s.cfg_scale, len(self.scales))
        if guided:
            labels_B = torch.cat([labels_B, torch.full_like(labels_B, self.null_class)])  # (2B,)
        cond_BW = self.class_emb(labels_B)
        mods = [block.modulation(cond_BW) for block in self.blocks]
        head_mod = self._head_modulation(cond_BW)
        if s.compiled:
            start_t, caches = self._static_caches(len(labels_B), cond_BW.device)
            run_step = self._compiled_blocks_and_head(cond_BW.device)
        else:
            caches = [KVCache(self.steps[s.n_steps - 1][1]) for _ in self.blocks] if s.use_cache else None
        x_BlW = self._start(cond_BW)
        seen_BLW = x_BlW[:, :0]  # the whole prefix, for the no-cache path
        state = self.layout.start_state(cond_BW[:B])
        tokens, step_logits = [], []
        for k, (start, end) in enumerate(self.steps[:s.n_steps]):
            x_BlW = x_BlW + self._position_terms(start, end)
            if s.compiled:
                start_t.fill_(start)
                logits_BlGV = run_step(x_BlW, mods, head_mod, caches, self.mask_LL[start:end])
            elif caches is not None:
                logits_BlGV = self._blocks_and_head(x_BlW, mods, head_mod, caches, None)
            else:
                seen_BLW = torch.cat([seen_BLW, x_BlW], dim=1)
                logits_BlGV = self._blocks_and_head(seen_BLW, mods, head_mod, [None] * len(self.blocks),
                                                    self.mask_LL[:end, :end], first=start)
            logits_BlGV = logits_BlGV.float()
            if guided:
                cond, uncond = logits_BlGV.chunk(2)  # cond + w·(cond − uncond), in one pass
                logits_BlGV = torch.lerp(uncond, cond, 1 + weights[self.layout.step_scale[k]])
            if s.keep_logits:
                step_logits.append(logits_BlGV)
            tokens_BlG = sample_tokens(logits_BlGV, s.top_k, s.top_p, generator)
            if forcing is not None:
                tokens_BlG = torch.where(forcing.kept_LG[start:end], forcing.tokens_BLG[:, start:end], tokens_BlG)
            tokens.append(tokens_BlG)
            if k < s.n_steps - 1:
                state, next_BlX = self.layout.next_input(k, tokens_BlG, quantizer, state)
                x_BlW = self.layout.embed(self.word_embed, next_BlX)
                if guided:
                    x_BlW = x_BlW.repeat(2, 1, 1)
        return self.layout.indices(torch.cat(tokens, dim=1)), step_logits

    def _blocks_and_head(self, x_BlW: torch.Tensor, mods: list[torch.Tensor], head_mod_B1X: torch.Tensor,
                         caches: Sequence[KVCache | StaticKVCache | None], mask_lL: torch.Tensor | None,
                         first: int = 0) -> torch.Tensor:
        """One sampling step after the input: every block (each with its cache), then the head on the
        positions from `first` on (the no-cache path runs the whole prefix, the head only on the new step)."""
        for block, mod, cache in zip(self.blocks, mods, caches):
            x_BlW = block(x_BlW, mod, mask_lL, cache)
        return self._logits(x_BlW[:, first:], head_mod_B1X)

    def _compiled_blocks_and_head(self, device: torch.device) -> Callable[..., torch.Tensor]:
        """`_blocks_and_head` through torch.compile, on a GPU with CUDA graphs (mode "reduce-overhead"): one
        graph per query length, batch and precision, which torch keeps for the next call."""
        cuda = device.type == "cuda"
        compiled = torch.compile(self._blocks_and_head, dynamic=False, mode="reduce-overhead" if cuda else None)

        def run(*args) -> torch.Tensor:
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are spent
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args).clone()  # a CUDA graph overwrites its output when it replays
        return run

    def _static_caches(self, batch: int, device: torch.device) -> tuple[torch.Tensor, list[StaticKVCache]]:
        """The `StaticKVCache` of every block for this batch (2B with guidance), device and activation dtype
        (bf16 under autocast), with their shared `start`: made once and kept, so that a compiled step (and
        a CUDA graph) finds the same buffers at every call."""
        dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                 else self.head.weight.dtype)
        key = (batch, dtype, device)
        if key not in self._static:
            start = torch.zeros((), dtype=torch.long, device=device)
            H = self.cfg.heads
            self._static[key] = start, [StaticKVCache(batch, H, self.length, self.cfg.width // H, dtype, device, start)
                                        for _ in self.blocks]
        return self._static[key]


def parameter_counts(model: Generator) -> dict[str, int]:
    """Parameters in the transformer blocks (the paper's #Para convention) and in the whole model."""
    return {"blocks": sum(p.numel() for p in model.blocks.parameters()),
            "total": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- training objective

class GeneratorObjective(nn.Module):
    """The trainer's objective for the generator (CONTRACTS.md): one phase, "model".

    Batches are (tokens (B, T) long in `flatten_indices` order, labels (B,) long), as yielded by
    `data.TokenDataset`. The quantizer (folded/unfolded modes) is frozen and kept in eval mode.
    """

    phases = ("model",)

    def __init__(self, generator: Generator, quantizer: nn.Module | None = None):
        super().__init__()
        self.generator = generator
        if generator.layout.uses_quantizer:
            generator.layout.check_quantizer(quantizer)
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
        return loss, {"acc": acc.detach()}  # a tensor: the trainer reads logs when it logs; it logs the loss itself
