"""Statistics against known answers: constant intervals, self-tests, rejection rates, Holm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from workflow_scripts.stats import bootstrap_interval, holm, paired_test

ALPHA = 0.05
REPEATS = 200  # simulated experiments per rate
RESAMPLES = 999  # relabellings per test: the smallest p is 1/1000, well below ALPHA
QUERIES = 30


def test_the_interval_of_a_constant_is_that_constant():
    assert bootstrap_interval(samples=[np.full(17, 0.3)], resamples=500, confidence=0.95, seed=1) == pytest.approx(
        (0.3, 0.3)
    )
    # several splits, each constant: the equally weighted mean of their means, whatever their sizes
    low, high = bootstrap_interval(
        samples=[np.full(5, 0.2), np.full(50, 0.6), np.zeros(9)], resamples=500, confidence=0.95, seed=1
    )
    assert low == pytest.approx((0.2 + 0.6 + 0.0) / 3) and high == pytest.approx(low)


def test_the_interval_holds_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(0)
    few, many = rng.random(20), rng.random(2000)
    low, high = bootstrap_interval(samples=[few], resamples=2000, confidence=0.95, seed=0)
    assert low < few.mean() < high
    low2, high2 = bootstrap_interval(samples=[many], resamples=2000, confidence=0.95, seed=0)
    assert high2 - low2 < (high - low) / 3  # ~ 1/sqrt(n): 10x narrower expected
    assert bootstrap_interval(samples=[few], resamples=2000, confidence=0.95, seed=0) == (low, high)  # seeded


def test_a_model_against_itself_gives_p_one():
    rng = np.random.default_rng(1)
    splits = [rng.random(n) for n in (12, 40, 7)]
    assert paired_test(a=splits, b=splits, resamples=RESAMPLES, seed=0) == {"delta": 0.0, "p": 1.0}
    assert paired_test(a=splits[:1], b=splits[:1], resamples=RESAMPLES, seed=0)["p"] == 1.0


def binomial_band(rate: float) -> tuple[int, int]:
    """Rejection counts of REPEATS independent tests that reject with probability ``rate``: the
    central 99.9 % of Binomial(REPEATS, rate), so a correct test fails this check 1 time in 1000."""
    low, high = sps.binom.interval(0.999, REPEATS, rate)
    return int(low), int(high)


def rejections(shift: float, sizes: tuple[int, ...], seed: int) -> int:
    """How many of REPEATS paired tests reject at ALPHA when b = a + noise + shift."""
    rng = np.random.default_rng(seed)
    count = 0
    for i in range(REPEATS):
        a = [rng.normal(size=n) for n in sizes]
        b = [x + rng.normal(size=len(x)) + shift for x in a]  # differences ~ N(shift, 1)
        count += paired_test(a=a, b=b, resamples=RESAMPLES, seed=[seed, i])["p"] <= ALPHA
    return count


def test_without_a_shift_the_test_rejects_at_alpha():
    """Under the null a randomization test rejects with probability alpha (exchangeable pairs),
    on one split and on the equally weighted mean of splits of different sizes."""
    low, high = binomial_band(ALPHA)
    assert low <= rejections(0.0, (QUERIES,), seed=10) <= high
    assert low <= rejections(0.0, (20, 8), seed=11) <= high


def test_with_a_known_shift_the_test_rejects_at_the_expected_power():
    """Differences ~ N(shift, 1) on QUERIES queries: the randomization test's power is, for
    normal data, that of the paired t-test (asymptotically equal; the finite-n gap at 30 queries
    is far inside the band), P(|T| > t_crit) with T ~ noncentral t(n - 1, shift * sqrt(n))."""
    shift = 0.37  # power ~ 0.5, where a wrong rate shows most
    crit = sps.t.ppf(1 - ALPHA / 2, QUERIES - 1)
    nc = shift * np.sqrt(QUERIES)
    power = sps.nct.sf(crit, QUERIES - 1, nc) + sps.nct.cdf(-crit, QUERIES - 1, nc)
    low, high = binomial_band(power)
    assert 0.3 < power < 0.7
    assert low <= rejections(shift, (QUERIES,), seed=12) <= high
    assert rejections(0.0, (QUERIES,), seed=12) < low  # the band separates the shift from no shift


def test_holm_against_a_hand_computed_example():
    # sorted 0.001, 0.012, 0.02, 0.04, 0.3 -> x5 x4 x3 x2 x1 = 0.005, 0.048, 0.06, 0.08, 0.3 (already increasing)
    assert holm([0.04, 0.001, 0.3, 0.02, 0.012]) == pytest.approx([0.08, 0.005, 0.3, 0.06, 0.048])
    # a later, smaller product is raised to the running maximum; a product above 1 is capped
    assert holm([0.02, 0.025, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
