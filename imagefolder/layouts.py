"""Token layouts: how the tokenizer's indices [S × (B, P, s, s)] become the generator's sequence.

Notation: S scales s_1..s_S, P branches, codebook size V, code dim C, width W, K = s_S. A layout has
L positions, G tokens predicted per position, and AR steps (blocks of positions sampled together):

- folded:   one position per site of each scale, L = Σ s_i², G = P (the head emits P·V logits and the
            P tokens are sampled in parallel). Scale i+1's input is the quantizer's cumulative f̂ of all
            branches after scale i, area-downsampled, P·C channels → linear → W. The VAR-style
            baseline is folded with P = 1.
- unfolded: one position per branch per site, scale-major then branch-major, L = P·Σ s_i², G = 1;
            input = that branch's C channels → linear → W, plus a branch embedding.
- raster:   next-token prediction over a single-scale single-branch tokenizer (scales=[K], P=1),
            L = K², G = 1; input = embedding of the previous token (LlamaGen-like).

Attention is block-causal over the steps: a position sees its own step and all earlier ones (scales for
folded / unfolded, single tokens for raster). A new layout is one `Layout` subclass in `LAYOUTS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Protocol

import torch
import torch.nn as nn

from .config import ConfigError, QuantizerConfig, token_count


def flatten_indices(indices: list[torch.Tensor]) -> torch.Tensor:
    """[S × (B, P, s, s)] → (B, P·Σ s²): scale-major, then branch, then row-major sites (the token cache)."""
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


class Quantizer(Protocol):
    """What a layout reads of the tokenizer's quantizer (CONTRACTS.md)."""

    scales: list[int]
    branches: int
    codebook_size: int
    code_dim: int

    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor: ...

    def next_input(self, f_hat_BPCKK: torch.Tensor, si: int, idx_BPss: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class Layout(ABC):
    """The sequence the generator reads and predicts, over one tokenizer's quantizer (`qcfg`).

    Per-position ids (L each): `block` (AR step, for the block-causal mask), `level` (scale),
    `site` (row of the position table), `branch` (row of the branch embedding). `steps` holds the
    (start, end) of each AR step and `step_scale` its scale. Subclasses give the ids (`_rows`), G, the
    input embedding and the inputs: teacher-forced from indices, and step by step while sampling.
    `targets` / `indices` assume each scale's positions are contiguous, a scale's (P, s, s) tokens
    read as G rows of sites; a layout that orders them otherwise overrides both.
    """

    name: ClassVar[str]
    uses_quantizer: ClassVar[bool] = True  # inputs come from the tokenizer's quantizer
    embeds_branch: ClassVar[bool] = False  # positions get a branch embedding

    def __init__(self, qcfg: QuantizerConfig):
        self.scales, self.branches = list(qcfg.scales), qcfg.branches
        self.codebook_size, self.code_dim = qcfg.codebook_size, qcfg.code_dim
        self.block, self.level, self.site, self.branch = (list(c) for c in zip(*self._rows()))
        self.length = len(self.block)
        starts = [i for i in range(self.length) if i == 0 or self.block[i] != self.block[i - 1]]
        self.steps = list(zip(starts, starts[1:] + [self.length]))
        self.step_scale = [self.level[i] for i in starts]

    @property
    @abstractmethod
    def tokens_per_position(self) -> int:
        """G: the tokens each position predicts."""

    @abstractmethod
    def _rows(self) -> list[tuple[int, int, int, int]]:
        """(block, level, site, branch) of each position, in sequence order."""

    def block_mask(self) -> torch.Tensor:
        """(L, L) bool, True where position i may attend to position j (j's step ≤ i's step)."""
        block_L = torch.tensor(self.block)
        return block_L[:, None] >= block_L[None, :]

    def n_steps(self, n_scales: int) -> int:
        """The AR steps that produce the first `n_scales` scales."""
        return sum(scale < n_scales for scale in self.step_scale)

    # ------------------------------------------------------------------ indices ↔ sequence order

    def _scale_spans(self, n_scales: int) -> list[tuple[int, int]]:
        """(start, end) of the positions of each of the first `n_scales` scales."""
        return [(self.level.index(i), len(self.level) - self.level[::-1].index(i)) for i in range(n_scales)]

    def targets(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Indices [n × (B, P, s, s)] (a prefix of scales) → tokens in sequence order (B, l, G)."""
        G = self.tokens_per_position
        return torch.cat([idx.reshape(idx.shape[0], G, -1).transpose(1, 2) for idx in indices], dim=1)

    def indices(self, tokens_BlG: torch.Tensor) -> list[torch.Tensor]:
        """Inverse of `targets` for the tokens of whole scales (B, l, G) → [n × (B, P, s, s)]."""
        n = self.level[tokens_BlG.shape[1] - 1] + 1
        return [self._grid(tokens_BlG[:, a:b], s) for (a, b), s in zip(self._scale_spans(n), self.scales)]

    def _grid(self, tokens_BnG: torch.Tensor, s: int) -> torch.Tensor:
        """One scale's tokens in sequence order (B, n, G) → (B, P, s, s)."""
        return tokens_BnG.transpose(1, 2).reshape(tokens_BnG.shape[0], self.branches, s, s)

    def token_branch(self) -> torch.Tensor:
        """(L, G) long: the branch of each predicted token (for teacher forcing some branches)."""
        return self.targets([torch.arange(self.branches).view(1, -1, 1, 1).expand(1, -1, s, s)
                             for s in self.scales])[0]

    # ------------------------------------------------------------------ checks (where data enters)

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

    def check_quantizer(self, quantizer: Quantizer | None) -> None:
        """Raise ValueError unless the quantizer's scales, branches, codebook size and code dim match."""
        quantizer = self._required(quantizer)
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

    def _required(self, quantizer: Quantizer | None) -> Quantizer:
        if quantizer is None:
            raise ValueError(f"generator layout {self.name!r} needs the tokenizer's quantizer for its inputs")
        return quantizer

    # ------------------------------------------------------------------ inputs

    @abstractmethod
    def input_embedding(self, width: int) -> nn.Module:
        """The module that embeds one step's input to width W (the generator's `word_embed`)."""

    def embed(self, word_embed: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One step's input → (B, l, W)."""
        return word_embed(x)

    def embed_inputs(self, word_embed: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """All teacher-forcing inputs → (B, L − n_first, W)."""
        return self.embed(word_embed, inputs)

    @abstractmethod
    def teacher_forcing_inputs(self, indices: list[torch.Tensor], quantizer: Quantizer | None) -> torch.Tensor:
        """The inputs of every step after the first, from the indices of the whole sequence."""

    def start_state(self, like: torch.Tensor) -> torch.Tensor | None:
        """What sampling carries from step to step (batch and device of `like` (B, ...))."""
        return None

    @abstractmethod
    def next_input(self, k: int, tokens_BlG: torch.Tensor, quantizer: Quantizer | None,
                   state: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """After sampling step k's tokens (B, l, G): (new state, step k+1's input)."""


class ScaleLayout(Layout):
    """Next-scale prediction: one AR step per scale; the inputs are the quantizer's f̂ (B, s², P·C)."""

    site_branches: ClassVar[bool]  # True: each branch of a site is its own position

    def _rows(self) -> list[tuple[int, int, int, int]]:
        rows, offset = [], 0
        for i, s in enumerate(self.scales):
            for p in range(self.branches if self.site_branches else 1):
                rows += [(i, i, offset + j, p) for j in range(s * s)]
            offset += s * s
        return rows

    def teacher_forcing_inputs(self, indices: list[torch.Tensor], quantizer: Quantizer | None) -> torch.Tensor:
        """(B, Σ_{i≥2} s_i², P·C) from `quantizer.teacher_forcing_inputs` (no gradient)."""
        with torch.no_grad():
            return self._required(quantizer).teacher_forcing_inputs(indices)

    def start_state(self, like: torch.Tensor) -> torch.Tensor:
        """f̂ = 0 (B, P, C, K, K)."""
        K = self.scales[-1]
        return like.new_zeros(like.shape[0], self.branches, self.code_dim, K, K)

    def next_input(self, k: int, tokens_BlG: torch.Tensor, quantizer: Quantizer | None,
                   f_hat_BPCKK: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Add scale k's tokens to f̂; the next input is f̂ at scale k+1 (B, s_{k+1}², P·C)."""
        if f_hat_BPCKK is None:
            raise ValueError("next_input: the state must be f̂ from start_state, got None")
        f_hat_BPCKK, next_BnX = self._required(quantizer).next_input(f_hat_BPCKK, k,
                                                                      self._grid(tokens_BlG, self.scales[k]))
        if next_BnX is None:
            raise ValueError(f"next_input: step {k} is the last of {len(self.scales)}; no input follows it")
        return f_hat_BPCKK, next_BnX


class Folded(ScaleLayout):
    """ImageFolder: the P branches of a site are one position; the head predicts P tokens (G = P)."""

    name = "folded"
    site_branches = False

    @property
    def tokens_per_position(self) -> int:
        return self.branches

    def input_embedding(self, width: int) -> nn.Module:
        return nn.Linear(self.branches * self.code_dim, width)


class Unfolded(ScaleLayout):
    """The unfolded baseline: each branch of a site is its own position (G = 1), branch-major per scale."""

    name = "unfolded"
    site_branches = True
    embeds_branch = True
    tokens_per_position = 1

    def input_embedding(self, width: int) -> nn.Module:
        return nn.Linear(self.code_dim, width)

    def embed(self, word_embed: nn.Module, x_BnD: torch.Tensor) -> torch.Tensor:
        """(B, s², P·C) → (B, P·s², W), branch-major like the positions."""
        x_BnPW = word_embed(x_BnD.unflatten(-1, (self.branches, self.code_dim)))  # (B, s², P, W)
        return x_BnPW.transpose(1, 2).flatten(1, 2)  # (B, P·s², W)

    def embed_inputs(self, word_embed: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        chunks = inputs.split([s * s for s in self.scales[1:]], dim=1)  # per scale (B, s², P·C)
        return torch.cat([self.embed(word_embed, c) for c in chunks], dim=1)


class Raster(Layout):
    """Next-token raster baseline over a single-scale single-branch tokenizer: one step per token."""

    name = "raster"
    uses_quantizer = False
    tokens_per_position = 1

    def __init__(self, qcfg: QuantizerConfig):
        if len(qcfg.scales) != 1 or qcfg.branches != 1:
            raise ConfigError(f"generator.layout: 'raster' needs a single-scale, single-branch tokenizer "
                              f"(quantizer.scales=[K], quantizer.branches=1), got scales={qcfg.scales}, "
                              f"branches={qcfg.branches}")
        super().__init__(qcfg)

    def _rows(self) -> list[tuple[int, int, int, int]]:
        return [(t, 0, t, 0) for t in range(self.scales[0] ** 2)]

    def input_embedding(self, width: int) -> nn.Module:
        return nn.Embedding(self.codebook_size, width)

    def teacher_forcing_inputs(self, indices: list[torch.Tensor], quantizer: Quantizer | None = None) -> torch.Tensor:
        """The previous tokens (B, K² − 1)."""
        return indices[0].flatten(1)[:, :-1]

    def next_input(self, k: int, tokens_BlG: torch.Tensor, quantizer: Quantizer | None,
                   state: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The token just sampled (B, 1)."""
        return state, tokens_BlG[:, :, 0]


LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (Folded, Unfolded, Raster)}


def build_layout(name: str, qcfg: QuantizerConfig) -> Layout:
    """The layout `name` (`generator.layout`) over the tokenizer's quantizer `qcfg`."""
    if name not in LAYOUTS:
        raise ConfigError(f"generator.layout: {name!r} is not one of {tuple(LAYOUTS)}")
    return LAYOUTS[name](qcfg)
