import math

import pytest
from scipy import stats as scipy_stats

from imagefolder import stats
from imagefolder.stats import PairedGain, PaperEffect, comparison_verdict, paired_gain

PAPER = PaperEffect(0.5)


def test_interval_matches_scipys_t_interval():
    gains = [3.1, -1.0, 5.2, 2.4]
    g = paired_gain(gains)
    low, high = scipy_stats.t.interval(0.95, len(gains) - 1, loc=sum(gains) / 4, scale=scipy_stats.sem(gains))
    assert g.n == 4 and g.low == pytest.approx(low) and g.high == pytest.approx(high)
    assert g.sd == pytest.approx(scipy_stats.tstd(gains))


def test_two_seeds_are_enough_for_an_interval():
    """Hand-worked: gains 1 and 3 have mean 2 and sd √2, so the half-width is t(0.975, 1) · √2 / √2 = 12.7062."""
    g = paired_gain([1.0, 3.0])
    assert (g.mean, g.n) == (2.0, 2) and g.sd == pytest.approx(math.sqrt(2))
    assert g.low == pytest.approx(2 - 12.7062, abs=1e-4) and g.high == pytest.approx(2 + 12.7062, abs=1e-4)
    assert g.describe() == "gain 2, 95 % CI [-10.7, 14.7] over 2 seeds"
    assert g.describe("folds").endswith("over 2 folds")


def test_one_seed_gives_its_gain_and_no_bounds():
    g = paired_gain([1.5])
    assert g.mean == 1.5 and g.n == 1 and math.isnan(g.low) and math.isnan(g.high) and not g.interval
    assert g.describe() == "gain 1.5 (one run each: no interval)"
    assert g.effect_text() == "+1.500 (+348.2 %), one run"
    with pytest.raises(ValueError) as err:
        paired_gain([])
    assert str(err.value) == "paired_gain needs at least one seed"


def test_effects_are_log_ratios_in_the_claims_direction():
    """A lower-is-better 2 vs 4 and a higher-is-better 4 vs 2 are both ln 2 the claim's way, +100 %."""
    assert stats.log_effects([2.0, 1.0], [4.0, 1.0], higher=False) == pytest.approx([math.log(2), 0.0])
    assert stats.log_effects([4.0], [2.0], higher=True) == pytest.approx([math.log(2)])
    assert stats.percent(math.log(2)) == pytest.approx(100.0) and stats.percent(0.0) == 0.0
    with pytest.raises(ValueError, match="positive"):
        stats.log_effects([0.0], [1.0], higher=False)
    with pytest.raises(ValueError, match="1 values of the better row against 2"):
        stats.log_effects([1.0], [1.0, 2.0], higher=False)
    g = paired_gain([0.1, 0.2, 0.3])
    assert g.effect_text() == "+0.200 [-0.048, +0.448] (+22.1 % [-4.7 %, +56.6 %]), n = 3"


def test_the_papers_effect_from_its_two_numbers_and_its_bounds():
    assert stats.paper_effect(3.53, 5.96) == PaperEffect(pytest.approx(math.log(5.96 / 3.53)))
    assert stats.paper_effect(58.0, 11.3, higher=True) == PaperEffect(pytest.approx(math.log(58.0 / 11.3)))
    # the worse row's ">20" (lower is better) bounds the effect from below
    assert stats.paper_effect(1.57, ">20") == PaperEffect(pytest.approx(math.log(20 / 1.57)), "≥")
    assert stats.paper_effect(">70", 11.3, higher=True).bound == "≥"
    assert PaperEffect(math.log(2), "≥").text() == "≥ +0.693 (≥ +100.0 %)"
    assert PaperEffect(-math.log(2)).text() == "-0.693 (-50.0 %)"
    with pytest.raises(ValueError, match="the paper's '>5' bounds its effect from above"):
        stats.paper_effect(">5", 3.55)


# (mean, low, high) → category, against a paper effect of 0.5; boundaries: an interval touching 0 contains it,
# one touching the paper's effect reaches it
@pytest.mark.parametrize("interval, verdict", [
    ((0.7, 0.6, 0.8), stats.HOLDS),  # above 0, beyond the paper's effect
    ((0.3, 0.1, 0.5), stats.HOLDS),  # touches the paper's effect: reaches it
    ((0.2, 0.1, 0.3), stats.WEAKER),
    ((0.3, 0.3, 0.3), stats.WEAKER),  # zero variance: a point above 0, below the paper's effect
    ((0.5, 0.5, 0.5), stats.HOLDS),  # zero variance at the paper's effect
    ((0.0, -0.1, 0.1), stats.NO_EFFECT),
    ((0.2, 0.0, 0.4), stats.NO_EFFECT),  # touches 0: contains it
    ((-0.2, -0.4, 0.0), stats.NO_EFFECT),  # touches 0 from below: not reversed
    ((0.0, 0.0, 0.0), stats.NO_EFFECT),  # zero variance at 0
    ((-0.3, -0.4, -0.2), stats.REVERSED),
    ((-0.3, -0.4, -1e-9), stats.REVERSED),
])
def test_verdict_categories_against_the_papers_effect(interval, verdict):
    assert comparison_verdict(PairedGain(*interval, n=3, sd=0.1), PAPER) == verdict


@pytest.mark.parametrize("interval", [(0.2, -0.2, 0.6), (0.25, 0.0, 0.5), (0.2, -0.3, 0.5)])
def test_inconclusive_names_the_seeds_that_would_decide(interval):
    """sd 1 against a paper effect of 0.5: the named n is the first at which t(0.975, n−1) / √n < 0.25."""
    n = stats.seeds_to_decide(1.0, 0.5)
    t = scipy_stats.t.ppf
    assert t(0.975, n - 1) / math.sqrt(n) < 0.25 <= t(0.975, n - 2) / math.sqrt(n - 1)
    assert comparison_verdict(PairedGain(*interval, n=3, sd=1.0), PAPER) == f"inconclusive (≈ {n} seeds to decide)"


def test_seeds_to_decide_by_hand():
    """sd 1, paper effect 1: t(0.975, 17) / √18 = 2.110 / 4.243 = 0.497 < 0.5, t(0.975, 16) / √17 = 2.120 /
    4.123 = 0.514 (t from a printed table)."""
    assert stats.seeds_to_decide(1.0, 1.0) == 18
    assert stats.seeds_to_decide(1.0, -1.0) == 18  # the size of the paper's effect counts, not its sign
    assert stats.seeds_to_decide(0.0, 0.3) == 2
    with pytest.raises(ValueError, match="nonzero"):
        stats.seeds_to_decide(1.0, 0.0)


def test_a_bound_on_the_papers_effect_is_its_least_value():
    bound = PaperEffect(0.3, "≥")
    assert comparison_verdict(PairedGain(0.2, 0.1, 0.35, 3, 0.1), bound) == stats.HOLDS
    assert comparison_verdict(PairedGain(0.15, 0.1, 0.25, 3, 0.1), bound) == stats.WEAKER
    assert comparison_verdict(PairedGain(0.0, -0.1, 0.25, 3, 0.1), bound) == stats.NO_EFFECT


@pytest.mark.parametrize("gains, verdict", [([2.0, 2.5, 3.0], "holds"), ([-2.0, -2.5, -3.0], "reversed"),
                                            ([1.0, -1.0, 0.5], "does not show"), ([5.0], "does not show"),
                                            ([2.0, 2.0, 2.0], "holds"), ([-1.0, -1.0], "reversed"),
                                            ([0.0, 0.0, 0.0], "does not show")])
def test_without_a_paper_number_three_verdicts(gains, verdict):
    assert comparison_verdict(paired_gain(gains), None) == verdict
    assert comparison_verdict(paired_gain(gains), PaperEffect(-0.2)) == verdict  # the paper's own numbers disagree


def test_a_measured_three_seed_effect():
    """gFD of 'one semantic, one detail' vs 'two detail branches', seeds 0, 1, 2 (paper: 3.53 vs 5.96)."""
    effects = stats.log_effects([74.9, 87.6, 79.1], [78.6, 87.1, 86.7], higher=False)
    g = paired_gain(effects)
    assert g.mean == pytest.approx((math.log(78.6 / 74.9) + math.log(87.1 / 87.6) + math.log(86.7 / 79.1)) / 3)
    assert comparison_verdict(g, stats.paper_effect(3.53, 5.96)) == stats.NO_EFFECT


def test_one_seed_never_decides():
    assert comparison_verdict(paired_gain([2.0]), PAPER) == stats.DOES_NOT_SHOW
    assert comparison_verdict(paired_gain([-2.0]), None) == stats.DOES_NOT_SHOW


M = stats.EQUIVALENCE_MARGIN


@pytest.mark.parametrize("interval, verdict", [
    ((0.0, -0.05, 0.05), stats.HOLDS), ((0.0, -M, M), stats.HOLDS),  # the margin itself is inside
    ((0.15, 0.1, 0.2), stats.DOES_NOT_HOLD), ((-0.15, -0.2, -0.1), stats.DOES_NOT_HOLD),
    ((0.1, 0.05, 0.2), stats.DOES_NOT_SHOW), ((0.0, -0.2, 0.2), stats.DOES_NOT_SHOW),
])
def test_equivalence_within_the_margin(interval, verdict):
    assert stats.equivalence_verdict(PairedGain(*interval, n=3, sd=0.1)) == verdict
    assert M == pytest.approx(math.log(1.1))


def test_equivalence_needs_an_interval():
    assert stats.equivalence_verdict(paired_gain([0.0])) == stats.DOES_NOT_SHOW


@pytest.mark.parametrize("gains, verdict", [([0.04, 0.03, 0.05], "holds"), ([-0.15, -0.17, -0.13], "does not hold"),
                                            ([0.04, -0.15, 0.02], "does not show"),
                                            ([-0.168], "below the level (one run)"), ([-0.03], "does not show"),
                                            ([-stats.LEVEL_SHORTFALL], "does not show"), ([0.02], "does not show")])
def test_level_verdict(gains, verdict):
    assert stats.level_verdict(paired_gain(gains)) == verdict


@pytest.mark.parametrize("verdict, category", [
    ("inconclusive (≈ 34 seeds to decide)", "inconclusive"), ("does not hold: nearer 1/2", "does not hold"),
    ("holds, weaker than the paper's", "holds, weaker than the paper's"), ("holds", "holds"),
    ("below the level (one run)", "below the level (one run)")])
def test_category_drops_the_detail(verdict, category):
    assert stats.category(verdict) == category
