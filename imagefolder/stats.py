"""The ledger's statistics: relative effects over seeds, their t-intervals, and the verdict categories.

For a claim "A is better than B" each seed s gives the relative effect x_s = ln(B_s / A_s) when lower is
better (FD, latency) and ln(A_s / B_s) when higher is better (accuracy), both sides trained with the same
seed, so x > 0 is the claim's direction and 100·(e^x − 1) is the effect as a % change. The interval is
mean(x) ± t_{0.975, n−1} · sd(x) / √n (Student's t, scipy). The paper's effect is the same quantity from
its two numbers (`paper_effect`); `comparison_verdict`, `equivalence_verdict` and `level_verdict` are the
rules, stated in `RULE`, `EQUIVALENCE_RULE` and `LEVEL_RULE`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
EQUIVALENCE_MARGIN = math.log(1.1)  # "about as well": the effect within ±10 % (our margin; the paper states none)
LEVEL_SHORTFALL = 0.05  # a single run this far below a level reads "below the level (one run)"

HOLDS = "holds"
WEAKER = "holds, weaker than the paper's"
NO_EFFECT = "no effect of the paper's size"
INCONCLUSIVE = "inconclusive"
REVERSED = "reversed"
DOES_NOT_SHOW = "does not show"
DOES_NOT_HOLD = "does not hold"
BELOW_LEVEL = "below the level (one run)"

RULE = (
    "for \"A better than B\", the per-seed relative effect x = ln(B/A) (lower is better) or ln(A/B) (higher "
    "is better), the same seeds on both sides, and the 95 % Student-t interval of its mean; the paper's effect "
    "is the same quantity from its two numbers. **holds**: the interval lies above 0 and reaches the paper's "
    "effect; **holds, weaker than the paper's**: above 0 but wholly below the paper's effect; **no effect of "
    "the paper's size**: it contains 0 and lies wholly below the paper's effect (the \"small telescopes\" "
    "reading of a replication); **inconclusive**: it contains both 0 and the paper's effect, with the seeds "
    "that would decide: the least n at which t(0.975, n−1) · sd / √n < |paper's effect| / 2 at our sd (an "
    "interval that narrow cannot hold both); **reversed**: the interval lies below 0. A bound in the paper "
    "(\">5\") bounds its effect from below (≥): reaching the bound counts as reaching it. Claims without a "
    "paper number (or where the paper's own numbers do not go the claim's way): **holds** above 0, "
    "**reversed** below 0, **does not show** otherwise. With one seed there is no interval: **does not show**. "
    "An interval touching 0 contains it; one touching the paper's effect reaches it. The paper's numbers are "
    "single runs, scored by Inception-v3 on ImageNet where ours are scored by the profile's metric network on "
    "its data: its effect is a yardstick with no interval, and only the relative effect is compared.")
EQUIVALENCE_RULE = (
    f"for \"A about as good as B\", the same interval of x: **holds** if it lies within ±{EQUIVALENCE_MARGIN:.3f} "
    f"(±{100 * (math.exp(EQUIVALENCE_MARGIN) - 1):.0f} %, our margin: the paper states none, and its own "
    "differences lie well inside it), **does not hold** if it lies wholly outside it, **does not show** "
    "otherwise (and with one seed).")
LEVEL_RULE = (
    "the 95 % t-interval of the mean over seeds of the value minus the level: **holds** above 0, **does not "
    "hold** below 0, **does not show** otherwise; a single run (no interval) more than "
    f"{LEVEL_SHORTFALL:.0%} of the codebook below the level reads **{BELOW_LEVEL}**, else **does not show**.")


def percent(x: float) -> float:
    """A relative effect x (a log ratio) as a % change, 100·(e^x − 1)."""
    return 100 * math.expm1(x)


@dataclass(frozen=True)
class PairedGain:
    """Mean of per-seed values over `n` seeds, their sd and the mean's interval [low, high] (NaN with n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan

    @property
    def interval(self) -> bool:
        return self.n >= 2

    def describe(self, unit: str = "seeds", name: str = "gain") -> str:
        if not self.interval:
            return f"{name} {self.mean:.3g} (one run each: no interval)"
        return f"{name} {self.mean:.3g}, 95 % CI [{self.low:.3g}, {self.high:.3g}] over {self.n} {unit}"

    def effect_text(self) -> str:
        """The mean effect and its interval, as a log ratio and as % change ('+0.12 [+0.03, +0.21] (+13 % [...])')."""
        if not self.interval:
            return f"{self.mean:+.3f} ({percent(self.mean):+.1f} %), one run"
        return (f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({percent(self.mean):+.1f} % "
                f"[{percent(self.low):+.1f} %, {percent(self.high):+.1f} %]), n = {self.n}")


def paired_gain(gains: Sequence[float], confidence: float = CONFIDENCE) -> PairedGain:
    """The t-interval of the mean of per-seed values."""
    values = [float(g) for g in gains]
    n = len(values)
    if n == 0:
        raise ValueError("paired_gain needs at least one seed")
    mean = sum(values) / n
    if n < 2:
        return PairedGain(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedGain(mean, mean - half, mean + half, n, sd)


def log_effects(better: Sequence[float], worse: Sequence[float], higher: bool) -> list[float]:
    """Per pair, ln(worse / better) when lower is better, ln(better / worse) when higher is better."""
    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"log_effects: {a.size} values of the better row against {b.size} of the worse")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("log_effects needs positive values (a ratio of metrics)")
    return (np.log(a / b) if higher else np.log(b / a)).tolist()


@dataclass(frozen=True)
class PaperEffect:
    """The paper's relative effect in the claim's direction; `bound` "≥" where it states a bound (">5")."""

    value: float
    bound: str = ""

    def text(self) -> str:
        prefix = f"{self.bound} " if self.bound else ""
        return f"{prefix}{self.value:+.3f} ({prefix}{percent(self.value):+.1f} %)"


def _number(value: float | str) -> tuple[float, str]:
    """(number, ">" or "") of a paper cell such as 3.55 or ">5"."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(">"):
            return float(text[1:]), ">"
        return float(text), ""
    return float(value), ""


def paper_effect(better: float | str, worse: float | str, higher: bool = False) -> PaperEffect:
    """The paper's effect from its numbers for the claimed-better and -worse rows (the form of `log_effects`).
    A ">x" on the side whose growth raises the effect (the worse row when lower is better) bounds it from
    below; one on the other side would bound it from above, which no rule here reads (ValueError)."""
    (a, a_bound), (b, b_bound) = _number(better), _number(worse)
    value = math.log(a / b) if higher else math.log(b / a)
    raising, lowering = (a_bound, b_bound) if higher else (b_bound, a_bound)
    if lowering:
        bounded = better if a_bound else worse
        raise ValueError(f"paper_effect: the paper's {bounded!r} bounds its effect from above; no rule reads that")
    return PaperEffect(value, "≥" if raising else "")


def seeds_to_decide(sd: float, paper: float, confidence: float = CONFIDENCE) -> int:
    """The least n ≥ 2 with t_{(1+c)/2, n−1} · sd / √n < |paper| / 2: an interval that narrow cannot contain
    both 0 and the paper's effect."""
    target = abs(paper) / 2
    if target == 0:
        raise ValueError("seeds_to_decide needs a nonzero paper effect")
    q = 0.5 + confidence / 2
    n = max(2, math.floor((stats.norm.ppf(q) * sd / target) ** 2))  # t > z, so no n below the normal one works
    while stats.t.ppf(q, n - 1) * sd / math.sqrt(n) >= target:
        n += 1
    return n


def comparison_verdict(gain: PairedGain, paper: PaperEffect | None) -> str:
    """`RULE`'s category of the interval `gain` of the relative effect against the paper's effect."""
    if not gain.interval:
        return DOES_NOT_SHOW
    if gain.high < 0:
        return REVERSED
    if paper is None or paper.value <= 0:
        return HOLDS if gain.low > 0 else DOES_NOT_SHOW
    if gain.low > 0:
        return HOLDS if gain.high >= paper.value else WEAKER
    if gain.high < paper.value:
        return NO_EFFECT
    return f"{INCONCLUSIVE} (≈ {seeds_to_decide(gain.sd, paper.value)} seeds to decide)"


def equivalence_verdict(gain: PairedGain, margin: float = EQUIVALENCE_MARGIN) -> str:
    """`EQUIVALENCE_RULE`: holds within ±margin, does not hold wholly outside it, else does not show."""
    if not gain.interval:
        return DOES_NOT_SHOW
    if -margin <= gain.low and gain.high <= margin:
        return HOLDS
    if gain.low > margin or gain.high < -margin:
        return DOES_NOT_HOLD
    return DOES_NOT_SHOW


def level_verdict(gain: PairedGain) -> str:
    """`LEVEL_RULE` for the per-seed values minus the level."""
    if not gain.interval:
        return BELOW_LEVEL if gain.mean < -LEVEL_SHORTFALL else DOES_NOT_SHOW
    if gain.low > 0:
        return HOLDS
    return DOES_NOT_HOLD if gain.high < 0 else DOES_NOT_SHOW


def category(verdict: str) -> str:
    """A verdict's category, without its detail ('inconclusive (≈ 34 seeds to decide)' → 'inconclusive')."""
    if verdict == BELOW_LEVEL:
        return verdict
    return verdict.split(" (")[0].split(":")[0]
