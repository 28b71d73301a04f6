"""Intervals: the paired row bootstrap against a direct numpy loop; t-intervals over seeds."""

import numpy as np
import pytest
import scipy.stats

from lookahead_jax import stats


def test_bootstrap_interval_matches_a_direct_numpy_reference():
  rng = np.random.default_rng(3)
  rows = 40
  tokens = rng.integers(5, 60, rows).astype(np.float64)  # per-row token counts
  g_h = rng.normal(0.02, 0.3, rows) * tokens  # per-row sums of two paired quantities
  g_1 = g_h - rng.normal(0.01, 0.1, rows) * tokens
  weights = stats.resample_counts(rows, 500, seed=7)
  lo, hi = stats.bootstrap_ratio(np.stack([g_h, g_1, g_h - g_1]), tokens, weights)

  draws = np.random.default_rng(7).integers(0, rows, size=(500, rows))  # the same resamples
  for k, sums in enumerate((g_h, g_1, g_h - g_1)):
    ratios = [sums[d].sum() / tokens[d].sum() for d in draws]
    np.testing.assert_allclose([lo[k], hi[k]], np.percentile(ratios, [2.5, 97.5]), rtol=1e-12)
  # Paired: the interval of the difference is that of the per-resample differences.
  diffs = [(g_h[d].sum() - g_1[d].sum()) / tokens[d].sum() for d in draws]
  np.testing.assert_allclose([lo[2], hi[2]], np.percentile(diffs, [2.5, 97.5]), rtol=1e-12)
  assert lo[0] <= g_h.sum() / tokens.sum() <= hi[0]


def test_t_interval_of_seeds():
  values = [0.1, 0.3, 0.2, 0.25]
  mean, lo, hi = stats.t_interval(values)
  half = scipy.stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
  assert mean == pytest.approx(0.2125) and (lo, hi) == pytest.approx((mean - half, mean + half))
  assert np.isnan(stats.t_interval([0.5])[1])  # one seed has no interval
  assert stats.t_interval([0.5, None, 0.7])[0] == pytest.approx(0.6)  # missing runs left out


def test_jackknife_of_a_mean_with_one_item_per_group_is_the_standard_error():
  x = np.random.default_rng(0).normal(size=40)
  est, lo, hi = stats.jackknife(lambda idx: x[idx].mean(), len(x), len(x))
  half = 1.959964 * x.std(ddof=1) / np.sqrt(len(x))
  assert est == pytest.approx(x.mean())
  assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-5)
  assert np.isnan(stats.jackknife(lambda idx: x[idx].mean(), 1, 4)[1])
