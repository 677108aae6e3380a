"""Quantizers of the ImageFolder tokenizer, built by composition (paper §3.1).

    Codebook              one codebook: nearest-code lookup (cosine or L2), single-scale VQ
    MultiScaleResidualQuantizer (MSRQ)   VAR-style residual quantization over scales s_1..s_S = K
    ProductQuantizer      P branches, each its own MSRQ and codebook; branches split the *tokens*

All three `forward`s return a `QuantizerOutput(f_hat, indices, loss, n_scales)`.

Facts honoured (official ImageFolder / VAR code):
- the residual starts as the (detached) feature map f; per scale it is area-downsampled to s×s, looked
  up, the code map is upsampled to K×K (bicubic; none at s = K), passed through φ and subtracted;
  f̂ is the sum of the φ outputs;
- φ(h) = (1-γ)·h + γ·conv3×3(h); `phi_convs` convs shared across scales by relative depth (`phi_index`);
- cosine lookup: features and codes are l2-normalised for the arg-max, the selected (raw) code vector
  is what is added to f̂ (so codes can also learn a magnitude);
- loss: the codebook term ‖f̂_≤i − sg(f)‖² averaged over scales, plus β times the commitment term
  ‖sg(f̂_≤i) − f‖² summed over scales (`commitment="sum"`, official) or averaged (`"mean"`); each
  scale's terms are means over the samples that kept it; the output is the straight-through estimate
  f + sg(f̂ − f);
- quantizer dropout in training truncates a sample to its first n scales, n ~ U{N_start..S}, the same n
  for all branches of a sample, never in eval; which samples: the first ⌊p·B⌋ of each per-process batch
  (`dropout_pick="first"`, official) or each with probability p (`"bernoulli"`);
- codebooks start uniform in ±1/V, rows then l2-normalised; φ convs start as the identity
  (`phi_init="identity"`) or with PyTorch's default conv init (`"default"`, official).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .config import QuantizerConfig


@torch.no_grad()
def nearest_code(z_NC: torch.Tensor, w_VC: torch.Tensor, lookup: str) -> torch.Tensor:
    """(N, C) features, (V, C) codes → (N,) index of the most cosine-similar / L2-nearest code."""
    z_NC, w_VC = z_NC.float(), w_VC.float()
    if lookup == "cosine":
        return (F.normalize(z_NC, dim=-1) @ F.normalize(w_VC, dim=-1).T).argmax(dim=1)
    d_NV = z_NC.square().sum(1, keepdim=True) - 2 * z_NC @ w_VC.T + w_VC.square().sum(1)
    return d_NV.argmin(dim=1)


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    f_hat: quantized features with the straight-through gradient, same shape as the input.
    indices: one LongTensor per scale (a single-scale quantizer gives a list of one).
    loss: scalar codebook + β·commitment loss.
    n_scales: (B,) number of scales each sample kept (S unless dropped).
    """

    f_hat: torch.Tensor
    indices: list[torch.Tensor]
    loss: torch.Tensor
    n_scales: torch.Tensor


class Codebook(nn.Module):
    """One codebook of `size` codes of dimension `dim` with nearest-code lookup.

    lookup="cosine": arg-max of the cosine similarity (official ImageFolder); "l2": arg-min of the
    squared distance (VAR). `forward` is a plain single-scale VQ with the straight-through estimator.
    """

    def __init__(self, size: int, dim: int, lookup: str = "cosine", beta: float = 0.25):
        super().__init__()
        self.size, self.dim, self.lookup, self.beta = size, dim, lookup, beta
        self.weight = nn.Parameter(torch.empty(size, dim))  # (V, C)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random unit vectors, as the official init: uniform in ±1/V, then each row l2-normalised."""
        self.weight.uniform_(-1.0 / self.size, 1.0 / self.size)
        self.weight.copy_(F.normalize(self.weight, dim=-1))

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """(N, C) features → (N,) indices of the nearest codes."""
        return nearest_code(z_NC, self.weight, self.lookup)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """(...) indices → (..., C) code vectors."""
        return F.embedding(idx, self.weight)

    def forward(self, f_BChw: torch.Tensor) -> QuantizerOutput:
        """Single-scale VQ of a (B, C, h, w) map; indices [(B, h, w)]."""
        B, C, h, w = f_BChw.shape
        idx_Bhw = self.nearest(f_BChw.permute(0, 2, 3, 1).reshape(-1, C)).view(B, h, w)
        q_BChw = self.embed(idx_Bhw).permute(0, 3, 1, 2)  # (B, C, h, w)
        loss = F.mse_loss(q_BChw, f_BChw.detach()) + self.beta * F.mse_loss(q_BChw.detach(), f_BChw)
        f_hat = f_BChw + (q_BChw - f_BChw).detach()
        return QuantizerOutput(f_hat, [idx_Bhw], loss, torch.ones(B, dtype=torch.long, device=f_BChw.device))


class Phi(nn.Module):
    """φ(h) = (1-γ)·h + γ·conv3×3(h) on (B, C, K, K); the conv starts as the identity (`init="identity"`)
    or with PyTorch's default conv init (`init="default"`)."""

    def __init__(self, dim: int, gamma: float, init: str = "identity"):
        super().__init__()
        self.gamma, self.init = gamma, init
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        if self.init == "default":
            self.conv.reset_parameters()
            return
        nn.init.dirac_(self.conv.weight)
        cast(torch.Tensor, self.conv.bias).zero_()

    def forward(self, h_BCkk: torch.Tensor) -> torch.Tensor:
        return (1 - self.gamma) * h_BCkk + self.gamma * self.conv(h_BCkk)


class MultiScaleResidualQuantizer(nn.Module):
    """MSRQ over a K×K map (K = scales[-1]) with one codebook shared by all scales.

    forward(f (B, C, K, K), n_scales (B,) or None) → QuantizerOutput with indices S × (B, s, s).
    """

    initialised: torch.Tensor  # buffer: bool scalar

    def __init__(self, qcfg: QuantizerConfig):
        super().__init__()
        self.scales = list(qcfg.scales)
        self.K = self.scales[-1]
        self.beta, self.commitment = qcfg.beta, qcfg.commitment
        self.codebook = Codebook(qcfg.codebook_size, qcfg.code_dim, qcfg.lookup, qcfg.beta)
        self.phis = nn.ModuleList(Phi(qcfg.code_dim, qcfg.phi_gamma, qcfg.phi_init) for _ in range(qcfg.phi_convs))
        # data-dependent init (codebook_init="data") happens on the first training batch
        self.register_buffer("initialised", torch.tensor(qcfg.codebook_init != "data"))
        self._ready = False  # `initialised` read as True once: no further reads (a device sync per training step)
        self._resize_cache: dict[tuple, torch.Tensor] = {}  # (a, b, mode, device, dtype) → (a², b²) resize matrix

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random unit codes (see `Codebook.init_weights`), then every φ conv (see `Phi.init_weights`)."""
        self.codebook.init_weights()
        for phi in cast(Sequence[Phi], self.phis):
            phi.init_weights()

    def phi_index(self, si: int) -> int:
        """Which shared φ conv scale `si` uses: the one whose tick is nearest to the scale's relative depth
        si / (S-1) (0 when S = 1), as VAR and the official ImageFolder code pick it. The n ticks are evenly
        spaced from a to 1 - a, with a = 1/(3n) for n = 4 and 1/(2n) otherwise; computed in float64 in the
        same order, so ties (S = 10: scales 3 and 8) fall the same way and φ weights map 1:1."""
        S, n = len(self.scales), len(self.phis)
        if S == 1 or n == 1:
            return 0
        a = 1 / 3 / n if n == 4 else 1 / 2 / n
        step = (1 - a - a) / (n - 1)
        ticks = [a + i * step for i in range(n - 1)] + [1 - a]
        depth = si / (S - 1)
        return min(range(n), key=lambda i: abs(ticks[i] - depth))  # the first of equals, like argmin

    def code_to_full(self, si: int, idx_Bss: torch.Tensor) -> torch.Tensor:
        """Indices of scale `si` (B, s, s) → φ(upsampled code map) (B, C, K, K), f̂'s term for that scale."""
        h_BCss = self.codebook.embed(idx_Bss).permute(0, 3, 1, 2)  # (B, C, s, s)
        s = idx_Bss.shape[-1]
        if s != self.K:
            h_BCss = self._resize(h_BCss, s, self.K, "bicubic")  # (B, C, K, K)
        return self.phis[self.phi_index(si)](h_BCss)

    def _downsample(self, r_BCkk: torch.Tensor, s: int) -> torch.Tensor:
        return r_BCkk if s == self.K else self._resize(r_BCkk, self.K, s, "area")  # (B, C, s, s)

    def _resize(self, x_BCaa: torch.Tensor, a: int, b: int, mode: str) -> torch.Tensor:
        """`F.interpolate(x, size=(b, b), mode=mode)` of (B, C, a, a) as one matmul with the (a², b²) matrix
        of that linear map (built once by interpolating the unit images): the same numbers up to float
        rounding, several times faster than CPU bicubic / adaptive-pool kernels at these tiny sizes."""
        key = (a, b, mode, x_BCaa.device, x_BCaa.dtype)
        m_AB = self._resize_cache.get(key)
        if m_AB is None:
            eye = torch.eye(a * a, dtype=torch.float64).view(a * a, 1, a, a)  # unit images
            m_AB = F.interpolate(eye, size=(b, b), mode=mode).reshape(a * a, b * b)  # (a², b²)
            m_AB = self._resize_cache[key] = m_AB.to(x_BCaa.device, x_BCaa.dtype)
        B, C = x_BCaa.shape[:2]
        return (x_BCaa.reshape(B, C, a * a) @ m_AB).view(B, C, b, b)  # (B, C, b, b)

    @torch.no_grad()
    def init_codebook_from(self, f_BCkk: torch.Tensor) -> None:
        """Data-dependent init: each scale gets an equal share of the codebook, filled with residual
        vectors seen at that scale (sampled with replacement, tiny jitter), quantizing as it goes.
        With cosine lookup all codes are then given the same (median) norm."""
        V, C, S = self.codebook.size, self.codebook.dim, len(self.scales)
        w_VC = self.codebook.weight
        rest_BCkk = f_BCkk.detach().float().clone()
        bounds = [round(V * i / S) for i in range(S + 1)]
        for si, s in enumerate(self.scales):
            r_NC = self._downsample(rest_BCkk, s).permute(0, 2, 3, 1).reshape(-1, C)  # (B*s*s, C)
            lo, hi = bounds[si], bounds[si + 1]
            if hi > lo:
                pick = torch.randint(0, r_NC.shape[0], (hi - lo,), device=r_NC.device)
                jitter = 1e-3 * r_NC.std().clamp_min(1e-6) * torch.randn(hi - lo, C, device=r_NC.device)
                w_VC[lo:hi] = (r_NC[pick] + jitter).to(w_VC.dtype)
            idx_Bss = nearest_code(r_NC, w_VC[: max(hi, 1)], self.codebook.lookup).view(-1, s, s)
            rest_BCkk -= self.code_to_full(si, idx_Bss).float()
        if self.codebook.lookup == "cosine":  # lookup ignores magnitude: give every code the median norm
            w_VC.copy_(F.normalize(w_VC, dim=-1) * w_VC.norm(dim=-1).median())
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(w_VC.data, src=0)
        self.initialised.fill_(True)

    def _codebook_ready(self) -> bool:
        """Whether the codebook is initialised, reading the buffer only until it first says so."""
        self._ready = self._ready or bool(self.initialised)
        return self._ready

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._ready = False  # a loaded `initialised` is read afresh
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, f_BCkk: torch.Tensor, n_scales: torch.Tensor | None = None) -> QuantizerOutput:
        B, C, K, _ = f_BCkk.shape
        if K != self.K:
            raise ValueError(f"MSRQ expects a {self.K}×{self.K} map (last scale), got {K}×{K}")
        S = len(self.scales)
        if n_scales is None:
            n_scales = torch.full((B,), S, dtype=torch.long, device=f_BCkk.device)
        if self.training and not self._codebook_ready():
            self.init_codebook_from(f_BCkk)
        with torch.autocast(f_BCkk.device.type, enabled=False):  # quantize in float32
            f_hat, indices, loss = self._quantize(f_BCkk.float(), n_scales)
        return QuantizerOutput(f_hat.to(f_BCkk.dtype), indices, loss, n_scales)

    def _quantize(self, f: torch.Tensor, n_scales: torch.Tensor
                  ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        B, C = f.shape[:2]
        f_nograd = f.detach()
        rest_BCkk = f_nograd.clone()
        f_hat_BCkk = torch.zeros_like(f)
        indices: list[torch.Tensor] = []
        codebook, commit = f.new_zeros(()), f.new_zeros(())
        for si, s in enumerate(self.scales):
            r_BCss = self._downsample(rest_BCkk, s)
            idx_Bss = self.codebook.nearest(r_BCss.permute(0, 2, 3, 1).reshape(-1, C)).view(B, s, s)
            h_BCkk = self.code_to_full(si, idx_Bss).float()
            keep_B = (si < n_scales).to(f.dtype)  # (B,)
            f_hat_BCkk = f_hat_BCkk + h_BCkk * keep_B.view(B, 1, 1, 1)
            rest_BCkk = rest_BCkk - h_BCkk.detach()
            indices.append(idx_Bss)
            n_kept = keep_B.sum().clamp_min(1)
            codebook_B = (f_hat_BCkk - f_nograd).square().mean(dim=(1, 2, 3))  # (B,)
            commit_B = (f_hat_BCkk.detach() - f).square().mean(dim=(1, 2, 3))  # (B,)
            codebook = codebook + (codebook_B * keep_B).sum() / n_kept
            commit = commit + (commit_B * keep_B).sum() / n_kept
        f_hat = f + (f_hat_BCkk - f).detach()  # straight-through
        S = len(self.scales)
        loss = codebook / S + self.beta * (commit if self.commitment == "sum" else commit / S)
        return f_hat, indices, loss

    def indices_to_fhat(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Any prefix of S × (B, s, s) indices → f̂ (B, C, K, K) summed over those scales."""
        return torch.stack([self.code_to_full(si, idx) for si, idx in enumerate(indices)]).sum(0)


class ProductQuantizer(nn.Module):
    """Product quantization over P token branches, each its own MSRQ and codebook (paper §3.1).

    forward(f (B, P, C, K, K)) → QuantizerOutput(f_hat (B, P, C, K, K), indices S × (B, P, s, s),
    loss (mean over branches), n_scales (B,)).
    Attributes read by the generator: `scales`, `branches` (P), `codebook_size` (V), `code_dim` (C);
    the per-branch quantizers are `msrq[p]`.
    """

    def __init__(self, qcfg: QuantizerConfig):
        super().__init__()
        self.cfg = qcfg
        self.scales = list(qcfg.scales)
        self.P, self.C, self.K, self.V = qcfg.branches, qcfg.code_dim, qcfg.scales[-1], qcfg.codebook_size
        self.msrq = nn.ModuleList(MultiScaleResidualQuantizer(qcfg) for _ in range(self.P))  # one per branch
        self.branches, self.codebook_size, self.code_dim = self.P, self.V, self.C  # the generator's contract

    @torch.no_grad()
    def init_weights(self) -> None:
        """Re-initialise every branch's codebook and φ convs (in branch order)."""
        for q in self.branch_quantizers:
            q.init_weights()

    @property
    def branch_quantizers(self) -> Sequence[MultiScaleResidualQuantizer]:
        """`msrq`, typed: one quantizer per branch, in branch order."""
        return cast(Sequence[MultiScaleResidualQuantizer], self.msrq)

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    def first_rows(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """(B,) bool: the first ⌊p·B⌋ samples, the ones `dropout_pick="first"` truncates."""
        return torch.arange(batch, device=device) < int(batch * self.cfg.dropout_p)

    def sample_n_scales(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """(B,) kept scales: S, or in training a draw n ~ U{N_start..S} for the first ⌊p·B⌋ samples
        (`dropout_pick="first"`) or for each sample with probability p (`"bernoulli"`)."""
        S, p = self.num_scales, self.cfg.dropout_p
        n_B = torch.full((batch,), S, dtype=torch.long, device=device)
        if self.training and p > 0:
            if self.cfg.dropout_pick == "first":
                drop_B = self.first_rows(batch, device)
            else:
                drop_B = torch.rand(batch, device=device) < p
            n_rand_B = torch.randint(self.cfg.dropout_n_start, S + 1, (batch,), device=device)
            n_B = torch.where(drop_B, n_rand_B, n_B)
        return n_B

    def forward(self, f_BPCkk: torch.Tensor, n_scales: torch.Tensor | None = None) -> QuantizerOutput:
        B, P = f_BPCkk.shape[:2]
        if P != self.P or f_BPCkk.shape[2] != self.C:
            raise ValueError(f"ProductQuantizer expects (B, {self.P}, {self.C}, K, K), got {tuple(f_BPCkk.shape)}")
        if n_scales is None:
            n_scales = self.sample_n_scales(B, f_BPCkk.device)
        outs = [q(f_BPCkk[:, p], n_scales) for p, q in enumerate(self.msrq)]
        f_hat_BPCkk = torch.stack([o.f_hat for o in outs], dim=1)  # (B, P, C, K, K)
        indices = [torch.stack([o.indices[si] for o in outs], dim=1) for si in range(self.num_scales)]  # S×(B,P,s,s)
        loss = torch.stack([o.loss for o in outs]).mean()
        return QuantizerOutput(f_hat_BPCkk, indices, loss, n_scales)

    # ------------------------------------------------------------------ conversions (CONTRACTS.md)

    def check_indices(self, indices: list[torch.Tensor]) -> None:
        """Raise ValueError unless `indices` is a non-empty prefix of S × (B, P, s_i, s_i) in [0, V)."""
        if not isinstance(indices, (list, tuple)) or not 1 <= len(indices) <= self.num_scales:
            length = len(indices) if hasattr(indices, "__len__") else "?"
            raise ValueError(f"indices: expected a list of 1..{self.num_scales} tensors (one per scale), "
                             f"got {type(indices).__name__} of length {length}")
        B = indices[0].shape[0]
        for si, idx in enumerate(indices):
            s = self.scales[si]
            if idx.dtype not in (torch.int64, torch.int32) or tuple(idx.shape) != (B, self.P, s, s):
                raise ValueError(f"indices[{si}]: expected an integer tensor of shape ({B}, {self.P}, {s}, {s}), "
                                 f"got {idx.dtype} {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.V):
                raise ValueError(f"indices[{si}]: values must be in [0, {self.V}), got range "
                                 f"[{int(idx.min())}, {int(idx.max())}]")

    def indices_to_fhat(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Any prefix of S × (B, P, s, s) indices → f̂ (B, P, C, K, K) from those scales only."""
        return torch.stack([q.indices_to_fhat([idx[:, p] for idx in indices])
                            for p, q in enumerate(self.branch_quantizers)], dim=1)

    def _add_scale(self, f_hat_BPCkk: torch.Tensor, si: int, idx_BPss: torch.Tensor) -> torch.Tensor:
        h_BPCkk = torch.stack([q.code_to_full(si, idx_BPss[:, p]) for p, q in enumerate(self.branch_quantizers)],
                              dim=1)
        return f_hat_BPCkk + h_BPCkk

    def _to_next_input(self, f_hat_BPCkk: torch.Tensor, si: int) -> torch.Tensor:
        """f̂ (B, P, C, K, K) area-downsampled to scale si+1 → (B, s², P*C), branches concatenated on channels."""
        B, P, C, K, _ = f_hat_BPCkk.shape
        s = self.scales[si + 1]
        x_BDss = F.interpolate(f_hat_BPCkk.reshape(B, P * C, K, K), size=(s, s), mode="area")  # (B, P*C, s, s)
        return x_BDss.flatten(2).transpose(1, 2)  # (B, s*s, P*C)

    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """S × (B, P, s, s) indices → (B, Σ_{i≥2} s_i², P*C): the generator's inputs for scales 2..S
        (cumulative f̂ after scale i, area-downsampled to scale i+1)."""
        B = indices[0].shape[0]
        f_hat = indices[0].new_zeros(B, self.P, self.C, self.K, self.K, dtype=torch.float32)
        outs = []
        for si in range(self.num_scales - 1):
            f_hat = self._add_scale(f_hat, si, indices[si])
            outs.append(self._to_next_input(f_hat, si))
        if not outs:
            return f_hat.new_zeros(B, 0, self.P * self.C)
        return torch.cat(outs, dim=1)

    def next_input(self, f_hat_BPCkk: torch.Tensor, si: int, idx_BPss: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale `si`'s tokens to f̂ (B, P, C, K, K); return (new f̂, the next scale's input
        (B, s_{si+1}², P*C)) or (new f̂, None) after the last scale."""
        f_hat_BPCkk = self._add_scale(f_hat_BPCkk.float(), si, idx_BPss)
        if si == self.num_scales - 1:
            return f_hat_BPCkk, None
        return f_hat_BPCkk, self._to_next_input(f_hat_BPCkk, si)
