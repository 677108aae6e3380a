import math

import pytest
from scipy import stats as scipy_stats

from imagefolder.stats import paired_gain


def test_interval_matches_scipys_t_interval():
    gains = [3.1, -1.0, 5.2, 2.4]
    g = paired_gain(gains)
    low, high = scipy_stats.t.interval(0.95, len(gains) - 1, loc=sum(gains) / 4, scale=scipy_stats.sem(gains))
    assert g.n == 4 and g.low == pytest.approx(low) and g.high == pytest.approx(high)


def test_a_measured_three_seed_gain_does_not_show():
    """A measured gFD of 'one semantic, one detail' vs 'two detail branches', seeds 0, 1, 2:
    a paired gain of 3.6 with an interval of about [-6.5, 13.7]."""
    gains = [78.6 - 74.9, 87.1 - 87.6, 86.7 - 79.1]
    g = paired_gain(gains)
    assert g.mean == pytest.approx(3.6, abs=0.05) and g.low == pytest.approx(-6.5, abs=0.3)
    assert g.high == pytest.approx(13.7, abs=0.3) and g.verdict == "does not show"


@pytest.mark.parametrize("gains, verdict", [([2.0, 2.5, 3.0], "holds"), ([-2.0, -2.5, -3.0], "reversed"),
                                            ([1.0, -1.0, 0.5], "does not show"), ([5.0], "does not show")])
def test_verdict_rule(gains, verdict):
    assert paired_gain(gains).verdict == verdict


def test_two_seeds_are_enough_for_an_interval():
    """Hand-worked: gains 1 and 3 have mean 2 and sd √2, so the half-width is t(0.975, 1) · √2 / √2 = 12.7062."""
    g = paired_gain([1.0, 3.0])
    assert (g.mean, g.n) == (2.0, 2)
    assert g.low == pytest.approx(2 - 12.7062, abs=1e-4) and g.high == pytest.approx(2 + 12.7062, abs=1e-4)
    assert g.describe() == "gain 2, 95 % CI [-10.7, 14.7] over 2 seeds"
    assert g.describe("folds").endswith("over 2 folds")


def test_zero_variance_and_an_interval_touching_zero():
    """sd = 0 gives a zero-width interval at the mean; an interval that touches 0 neither holds nor reverses."""
    assert (paired_gain([2.0, 2.0, 2.0]).low, paired_gain([2.0, 2.0, 2.0]).high) == (2.0, 2.0)
    assert paired_gain([2.0, 2.0, 2.0]).verdict == "holds" and paired_gain([-1.0, -1.0]).verdict == "reversed"
    assert paired_gain([0.0, 0.0, 0.0]).verdict == "does not show"


def test_one_seed_gives_its_gain_and_no_bounds():
    g = paired_gain([1.5])
    assert g.mean == 1.5 and g.n == 1 and math.isnan(g.low) and math.isnan(g.high)
    assert g.describe() == "gain 1.5 (one run each: no interval)"
    with pytest.raises(ValueError) as err:
        paired_gain([])
    assert str(err.value) == "paired_gain needs at least one seed"
