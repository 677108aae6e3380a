"""Sampling from a `Generator`: the autoregressive loop (`sample`), the step runners it runs each step's
positions through (`CachedSteps` over a `KVCache`; `CompiledSteps`, torch.compile over a `StaticKVCache`),
classifier-free guidance and the per-branch top-k / top-p draw.

Guidance runs as a 2B batch with guided logits cond + t·(cond − uncond), t ramped linearly from 0 at the
first scale to `cfg_scale` at the last, so cfg_scale = 0 is no guidance (VAR / official ImageFolder
convention; LlamaGen's scale is 1 + t); the P tokens of a position are drawn in parallel with top-k then
top-p applied to each branch separately.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .config import GeneratorConfig
from .layouts import Layout, Quantizer

if TYPE_CHECKING:
    from .generator import Generator


# graphs a compiled sampler may hold for `Generator.blocks_and_head` (one per generator, query length, batch
# and precision; torch's default of 8 would fall back to eager past the eighth)
RECOMPILE_LIMIT = 256

def sample_tokens(logits: torch.Tensor, top_k: int | None = None, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one token per row of `logits` (..., V) with top-k then top-p filtering, each row alone.

    Every row (one branch of one position) is filtered on its own: top-k keeps the k largest logits
    (None or k ≥ V: all); top-p then keeps the smallest prefix of those, by decreasing probability
    renormalised over the kept set, whose mass reaches p (p = 1: all). Returns (...) long.

    The draw inverts each row's cumulative distribution at one uniform number (`torch.multinomial` would
    draw an exponential per candidate).
    """
    order_Nk, cdf_Nk, kept_N1 = candidates(logits, top_k, top_p)
    mass_N1 = cdf_Nk.gather(1, kept_N1 - 1)  # of the kept prefix, which the draw renormalises over
    u_N1 = torch.rand(mass_N1.shape, generator=generator, device=mass_N1.device, dtype=mass_N1.dtype)
    pick_N1 = torch.searchsorted(cdf_Nk, u_N1 * mass_N1)  # the first candidate whose cdf reaches u · mass
    return order_Nk.gather(1, pick_N1).view(logits.shape[:-1])


def candidates(logits: torch.Tensor, top_k: int | None = None, top_p: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tokens `sample_tokens` draws from, per row of `logits` (..., V) flattened to N rows: the top-k
    token ids by decreasing logit (N, k), their cumulative probability within the k (N, k), and how many of
    them top-p keeps (N, 1) (the kept set is `order[:, :kept]`)."""
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
    return order_Nk, cdf_Nk, kept_N1


def guidance_weights(cfg_scale: float, num_scales: int) -> list[float]:
    """Per-scale guidance weight t_i, ramped linearly from 0 at the first scale to `cfg_scale` at the
    last (one scale: constant `cfg_scale`). Guided logits = cond + t·(cond − uncond), so t = 0 is no
    guidance (VAR / official ImageFolder convention; the LlamaGen-style scale is 1 + t)."""
    if num_scales == 1:
        return [cfg_scale]
    return [cfg_scale * i / (num_scales - 1) for i in range(num_scales)]


@dataclass(frozen=True)
class SamplingSettings:
    """The checked settings of one `Generator.sample` call (see there)."""

    cfg_scale: float  # guidance weight at the last scale (0 = none, no doubled batch)
    top_k: int  # per branch; k ≥ V keeps every token
    top_p: float  # per branch, in (0, 1]; 1 keeps every token
    n_steps: int  # AR steps to run (those of the first n_scales scales)
    keep_logits: bool = False  # also return each step's guided logits
    compiled: bool = False  # blocks and head through torch.compile, over a StaticKVCache

    @classmethod
    def resolve(cls, gcfg: GeneratorConfig, layout: Layout, cfg_scale: float | None, top_k: int | None,
                top_p: float | None, n_scales: int | None, keep_logits: bool, compiled: bool) -> SamplingSettings:
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
        return cls(cfg_scale, top_k, top_p, layout.n_steps(n_scales), keep_logits, compiled)


@dataclass(frozen=True)
class Forcing:
    """Teacher forcing while sampling: reference tokens in sequence order and which of them are kept."""

    tokens_BLG: torch.Tensor  # (B, L, G) long
    kept_LG: torch.Tensor  # (L, G) bool: the tokens of the forced branches

    @classmethod
    def resolve(cls, layout: Layout, reference: list[torch.Tensor] | None, force_branches: Sequence[int],
                labels_B: torch.Tensor) -> Forcing | None:
        """The checked teacher forcing of a `Generator.sample` call, None without forced branches."""
        force = sorted(set(force_branches))
        if not force:
            return None
        if layout.branches == 1:
            raise ValueError(f"teacher forcing needs a multi-branch tokenizer; this {layout.name} "
                             f"generator has one branch")
        if reference is None:
            raise ValueError("force_branches needs `reference` indices")
        if not all(0 <= p < layout.branches for p in force):
            raise ValueError(f"force_branches {force} must be in [0, {layout.branches})")
        layout.check_indices(reference)
        if reference[0].shape[0] != labels_B.shape[0]:
            raise ValueError(f"reference batch {reference[0].shape[0]} != number of labels {labels_B.shape[0]}")
        device = labels_B.device
        kept_LG = torch.isin(layout.token_branch().to(device), torch.tensor(force, device=device))
        return cls(layout.targets(reference).to(device), kept_LG)


class KVCache:
    """Keys and values of the positions seen so far, preallocated for `length` positions."""

    def __init__(self, length: int):
        self.length, self.n = length, 0
        self.k_BHLd: torch.Tensor | None = None
        self.v_BHLd: torch.Tensor | None = None

    def extend(self, k_BHld: torch.Tensor, v_BHld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values (B, H, l, d); return all so far (B, H, n, d)."""
        if self.k_BHLd is None or self.v_BHLd is None:
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
    for the compiled sampler (`CompiledSteps`; CUDA graphs on a GPU replay fixed addresses).

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


class CachedSteps:
    """Runs one AR step's new positions (B, l, W) through every block, each over its cache in `caches`, then
    the head: logits (B, l, G, V). Built per `sample` call for the conditioning `cond_BW` (B, W)."""

    def __init__(self, model: Generator, cond_BW: torch.Tensor, caches: Sequence[KVCache | StaticKVCache]):
        self.model, self.caches = model, caches
        self.mods = [block.modulation(cond_BW) for block in model.block_list]
        self.head_mod = model.head_modulation(cond_BW)

    def __call__(self, x_BlW: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return self.model.blocks_and_head(x_BlW, self.mods, self.head_mod, self.caches, None)


class CompiledSteps(CachedSteps):
    """`CachedSteps` through torch.compile over the model's `StaticKVCache`s (`static_caches`), on a GPU with
    CUDA graphs (mode "reduce-overhead"): one graph per query length, batch and precision, compiled at the
    first call of each and kept by torch for the next."""

    def __init__(self, model: Generator, cond_BW: torch.Tensor):
        device = cond_BW.device
        self.start_t, caches = static_caches(model, len(cond_BW), device)
        super().__init__(model, cond_BW, caches)
        self.cuda = device.type == "cuda"
        self.compiled = torch.compile(model.blocks_and_head, dynamic=False,
                                      mode="reduce-overhead" if self.cuda else None)

    def __call__(self, x_BlW: torch.Tensor, start: int, end: int) -> torch.Tensor:
        self.start_t.fill_(start)
        if self.cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are spent
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            logits = self.compiled(x_BlW, self.mods, self.head_mod, self.caches, self.model.mask_LL[start:end])
        return logits.clone()  # a CUDA graph overwrites its output when it replays


def static_caches(model: Generator, batch: int, device: torch.device) -> tuple[torch.Tensor, list[StaticKVCache]]:
    """The `StaticKVCache` of every block of `model` for this batch (2B with guidance), device and activation
    dtype (bf16 under autocast), with their shared `start`: made once and kept in `model.static_kv`, so that a
    compiled step (and a CUDA graph) finds the same buffers at every call."""
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else model.head.weight.dtype)
    key = (batch, dtype, device)
    if key not in model.static_kv:
        start = torch.zeros((), dtype=torch.long, device=device)
        H, W = model.cfg.heads, model.cfg.width
        model.static_kv[key] = start, [StaticKVCache(batch, H, model.length, W // H, dtype, device, start)
                                       for _ in model.blocks]
    return model.static_kv[key]


def sample(model: Generator, labels_B: torch.Tensor, quantizer: Quantizer | None, s: SamplingSettings,
           forcing: Forcing | None, generator: torch.Generator | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The AR loop of `Generator.sample` (checked arguments, eval mode, no grad): token indices
    [n × (B, P, s, s)] and the guided logits of each step [(B, l, G, V)] if `s.keep_logits`."""
    B, guided, layout = labels_B.shape[0], s.cfg_scale > 0, model.layout
    weights = guidance_weights(s.cfg_scale, len(layout.scales))
    if guided:
        labels_B = torch.cat([labels_B, torch.full_like(labels_B, model.null_class)])  # (2B,)
    cond_BW = model.class_emb(labels_B)
    length = layout.steps[s.n_steps - 1][1]
    run_step = (CompiledSteps(model, cond_BW) if s.compiled
                else CachedSteps(model, cond_BW, [KVCache(length) for _ in model.blocks]))
    x_BlW = model.start_input(cond_BW)
    state = layout.start_state(cond_BW[:B])
    tokens, step_logits = [], []
    for k, (start, end) in enumerate(layout.steps[:s.n_steps]):
        logits_BlGV = run_step(x_BlW + model.position_terms(start, end), start, end).float()
        if guided:
            cond, uncond = logits_BlGV.chunk(2)  # cond + w·(cond − uncond), in one pass
            logits_BlGV = torch.lerp(uncond, cond, 1 + weights[layout.step_scale[k]])
        if s.keep_logits:
            step_logits.append(logits_BlGV)
        tokens_BlG = sample_tokens(logits_BlGV, s.top_k, s.top_p, generator)
        if forcing is not None:
            tokens_BlG = torch.where(forcing.kept_LG[start:end], forcing.tokens_BLG[:, start:end], tokens_BlG)
        tokens.append(tokens_BlG)
        if k < s.n_steps - 1:
            state, next_BlX = layout.next_input(k, tokens_BlG, quantizer, state)
            x_BlW = layout.embed(model.word_embed, next_BlX)
            if guided:
                x_BlW = x_BlW.repeat(2, 1, 1)
    return layout.indices(torch.cat(tokens, dim=1)), step_logits
