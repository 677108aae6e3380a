"""The ledger's statistics at the boundaries test_stats.py leaves open (found by mutation testing, stats.py).

Every expected value is worked out by hand; Student-t quantiles t(0.975, df) are those of a printed table:
df 2: 4.303, 3: 3.182, 8: 2.306, 9: 2.262.
"""
from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from imagefolder import stats
from imagefolder.stats import PairedGain, PaperEffect

M = stats.EQUIVALENCE_MARGIN


def _gain(mean: float, low: float, high: float) -> PairedGain:
    return PairedGain(mean, low, high, n=3, sd=0.1)


def test_seeds_to_decide_when_the_normal_start_is_below_the_answer():
    """sd 1, paper effect 4 (half: 2): t(0.975, 2) / √3 = 2.484 ≥ 2, t(0.975, 3) / √4 = 1.591 < 2: four seeds."""
    assert stats.seeds_to_decide(1.0, 4.0) == 4


def test_seeds_to_decide_scales_with_the_sd():
    """sd 2, paper effect 3 (half: 1.5), so t / √n < 0.75: t(0.975, 8) / 3 = 0.769, t(0.975, 9) / √10 = 0.715."""
    assert stats.seeds_to_decide(2.0, 3.0) == 10


def test_seeds_to_decide_needs_strictly_less_than_half_the_papers_effect():
    """An interval whose half-width is exactly half the paper's effect at n = 4 can still hold 0 and the paper's
    effect (both at its ends): the next n decides, t(0.975, 4) · 2 / √5 = 2.483 < 3.182."""
    half_at_4 = scipy_stats.t.ppf(0.5 + 0.95 / 2, 3) * 2.0 / math.sqrt(4)  # sd 2, n = 4
    assert stats.seeds_to_decide(2.0, 2 * half_at_4) == 5


def test_seeds_to_decide_refuses_a_zero_paper_effect_by_name():
    with pytest.raises(ValueError) as err:
        stats.seeds_to_decide(1.0, 0.0)
    assert str(err.value) == "seeds_to_decide needs a nonzero paper effect"


@pytest.mark.parametrize("interval, verdict", [
    ((0.3, 0.1, 0.5), stats.HOLDS),  # wholly above 0, though below 1
    ((0.0, -0.1, 0.1), stats.DOES_NOT_SHOW),
    ((0.1, 0.0, 0.2), stats.DOES_NOT_SHOW),  # touches 0: contains it
])
def test_a_paper_effect_of_zero_reads_as_no_paper_number(interval, verdict):
    """The paper's two numbers equal (effect 0) give no yardstick: holds / reversed / does not show."""
    assert stats.comparison_verdict(_gain(*interval), PaperEffect(0.0)) == verdict
    assert stats.comparison_verdict(_gain(*interval), None) == verdict


@pytest.mark.parametrize("interval, verdict", [
    ((M + 0.05, M, M + 0.1), stats.DOES_NOT_SHOW),  # touches the margin from above: not wholly outside
    ((-M - 0.05, -M - 0.1, -M), stats.DOES_NOT_SHOW),  # touches it from below
    ((-0.05, -0.2, 0.05), stats.DOES_NOT_SHOW),  # crosses the lower margin only
    ((M + 0.1, M + 1e-9, M + 0.2), stats.DOES_NOT_HOLD),
    ((-M - 0.1, -M - 0.2, -M - 1e-9), stats.DOES_NOT_HOLD),
])
def test_equivalence_at_the_margins_edges(interval, verdict):
    assert stats.equivalence_verdict(_gain(*interval)) == verdict


@pytest.mark.parametrize("interval, verdict", [
    ((0.1, 0.0, 0.2), stats.DOES_NOT_SHOW),  # touches the level from above
    ((-0.1, -0.2, 0.0), stats.DOES_NOT_SHOW),  # touches it from below
    ((0.1, 1e-9, 0.2), stats.HOLDS),
    ((-0.1, -0.2, -1e-9), stats.DOES_NOT_HOLD),
])
def test_level_verdict_at_zero(interval, verdict):
    assert stats.level_verdict(_gain(*interval)) == verdict


def test_log_effects_refuse_zero_on_either_side_by_name():
    for better, worse in (([0.0], [1.0]), ([1.0], [0.0]), ([1.0], [-2.0])):
        with pytest.raises(ValueError) as err:
            stats.log_effects(better, worse, higher=False)
        assert str(err.value) == "log_effects needs positive values (a ratio of metrics)"


def test_log_effects_read_numbers_given_as_text():
    """Values read from a text table ('2.0') are numbers: ln(4 / 2) and ln(1 / 1) the claim's way."""
    assert stats.log_effects(["2.0", "1"], ["4", "1.0"], higher=False) == pytest.approx([math.log(2), 0.0])
    assert stats.log_effects(["4"], [2.0], higher=True) == pytest.approx([math.log(2)])
    assert stats.log_effects([4.0], ["2"], higher=True) == pytest.approx([math.log(2)])


def test_paper_cells_given_as_text():
    """A cell '3.53' is the number 3.53 (no bound); ' >20 ' a bound."""
    assert stats.paper_effect("3.53", "5.96") == PaperEffect(pytest.approx(math.log(5.96 / 3.53)), "")
    assert stats.paper_effect(1.57, " >20 ") == PaperEffect(pytest.approx(math.log(20 / 1.57)), "≥")


def test_an_upper_bound_is_named_on_the_side_it_is_on():
    """Higher is better: '>11.3' on the worse row bounds the effect from above, and the message names that cell."""
    with pytest.raises(ValueError) as err:
        stats.paper_effect(58.0, ">11.3", higher=True)
    assert str(err.value) == "paper_effect: the paper's '>11.3' bounds its effect from above; no rule reads that"


def test_one_run_effect_text():
    """One seed: ln 2 is +100 %."""
    assert PairedGain(math.log(2), math.nan, math.nan, 1).effect_text() == "+0.693 (+100.0 %), one run"
