import math

import pytest
from scipy import stats as scipy_stats

from imagefolder.stats import paired_gain


def test_interval_matches_scipys_t_interval():
    gains = [3.1, -1.0, 5.2, 2.4]
    g = paired_gain(gains)
    low, high = scipy_stats.t.interval(0.95, len(gains) - 1, loc=sum(gains) / 4, scale=scipy_stats.sem(gains))
    assert g.n == 4 and g.low == pytest.approx(low) and g.high == pytest.approx(high)


def test_issue_17_example_does_not_show():
    """Issue 17's measured gFD of 'one semantic, one detail' vs 'two detail branches', seeds 0, 1, 2:
    a paired gain of 3.6 with an interval of about [-6.5, 13.7]."""
    gains = [78.6 - 74.9, 87.1 - 87.6, 86.7 - 79.1]
    g = paired_gain(gains)
    assert g.mean == pytest.approx(3.6, abs=0.05) and g.low == pytest.approx(-6.5, abs=0.3)
    assert g.high == pytest.approx(13.7, abs=0.3) and g.verdict == "does not show"


@pytest.mark.parametrize("gains, verdict", [([2.0, 2.5, 3.0], "holds"), ([-2.0, -2.5, -3.0], "reversed"),
                                            ([1.0, -1.0, 0.5], "does not show"), ([5.0], "does not show")])
def test_verdict_rule(gains, verdict):
    assert paired_gain(gains).verdict == verdict


def test_one_seed_has_no_interval():
    g = paired_gain([1.5])
    assert math.isnan(g.low) and "no interval" in g.describe()
    with pytest.raises(ValueError):
        paired_gain([])
