"""The ledger's statistics: a 95 % t-interval of the mean paired difference over seeds, and the verdict rule.

For a claim "A is better than B" each seed s gives a gain d_s (A's advantage in the paper's direction:
B − A when lower is better, A − B when higher is better), both sides trained with the same seed. The
interval is mean(d) ± t_{0.975, n−1} · sd(d) / √n (Student's t, scipy). The claim **holds** when the
interval lies above 0, is **reversed** when it lies below 0, and **does not show** otherwise (also with
fewer than two seeds, where no interval exists).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
RULE = ("for \"A better than B\", the 95 % Student-t interval of the mean paired gain of A over B across "
        "seeds (the same seeds on both sides): **holds** if it lies above 0, **reversed** if it lies below 0, "
        "**does not show** otherwise (and with one seed, where there is no interval).")


@dataclass(frozen=True)
class PairedGain:
    """Mean gain of A over B across `n` seeds and its interval [low, high] (NaN with n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        if self.n >= 2 and self.low > 0:
            return "holds"
        if self.n >= 2 and self.high < 0:
            return "reversed"
        return "does not show"

    def describe(self, unit: str = "seeds") -> str:
        if self.n < 2:
            return f"gain {self.mean:.3g} (one run each: no interval)"
        return f"gain {self.mean:.3g}, 95 % CI [{self.low:.3g}, {self.high:.3g}] over {self.n} {unit}"


def paired_gain(gains: Sequence[float], confidence: float = CONFIDENCE) -> PairedGain:
    """The t-interval of the mean of per-seed gains."""
    values = [float(g) for g in gains]
    n = len(values)
    if n == 0:
        raise ValueError("paired_gain needs at least one seed")
    mean = sum(values) / n
    if n < 2:
        return PairedGain(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedGain(mean, mean - half, mean + half, n)
