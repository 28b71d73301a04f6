"""Intervals: paired bootstrap over sequences (rows), t-intervals over seeds.

Tokens of one sequence are not independent, so an interval of a per-token mean resamples
whole rows (docs/design.md section 2, "Intervals"): a ratio of sums, sum_rows(x) /
sum_rows(n), recomputed on rows drawn with replacement. Paired: the same resamples for
every quantity compared (q_H and its control, the two sides of G). Across training runs
the unit is the seed: mean and Student-t interval over n >= 2 seeds, differences paired
by seed. A statistic of a whole set (distinct n-grams over all texts) gets a
delete-a-group jackknife interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats


def resample_counts(rows: int, resamples: int, seed: int = 0) -> np.ndarray:
  """[resamples, rows] how often each row is drawn in each bootstrap resample (float64)."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, rows, size=(resamples, rows))
  counts = np.zeros((resamples, rows))
  np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
  return counts


def bootstrap_ratio(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """Percentile interval of sum(sums) / sum(counts) over row resamples.

  sums: [..., R] per-row sums of the quantity; counts: [..., R] per-row token counts
  (broadcast against sums); weights: [resamples, R] from `resample_counts` (the same for
  every quantity: paired). Returns (lo, hi), each of shape [...] (NaN where a resample
  has no token).
  """
  num = np.einsum("...r,br->...b", sums, weights)
  den = np.einsum("...r,br->...b", np.broadcast_to(counts, sums.shape), weights)
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = num / den
  tail = 100 * (1 - level) / 2
  if np.isnan(ratio).all():
    nan = np.full(ratio.shape[:-1], np.nan)
    return nan, nan
  lo, hi = np.nanpercentile(ratio, [tail, 100 - tail], axis=-1)
  return lo, hi


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, lo, hi): Student-t interval of the mean of independent runs (NaN for n < 2)."""
  x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
  if len(x) == 0:
    return float("nan"), float("nan"), float("nan")
  mean = float(x.mean())
  if len(x) < 2:
    return mean, float("nan"), float("nan")
  half = float(scipy.stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
  return mean, mean - half, mean + half


def jackknife(statistic: Callable[[np.ndarray], float], n: int, groups: int,
              level: float = 0.95) -> tuple[float, float, float]:
  """(estimate, lo, hi): a statistic of n items and its delete-a-group jackknife interval.

  statistic(indices) is computed on all n items and with each of `groups` contiguous
  groups left out; the interval is the estimate +- a normal quantile times the jackknife
  standard error, for statistics of a whole set (unique n-grams over all texts) that a
  bootstrap, which repeats items, would bias. NaN bounds for fewer than 2 groups.
  """
  everything = np.arange(n)
  estimate = float(statistic(everything))
  parts = np.array_split(everything, min(groups, n))
  if len(parts) < 2:
    return estimate, float("nan"), float("nan")
  left_out = np.asarray([statistic(np.setdiff1d(everything, p)) for p in parts], np.float64)
  g = len(parts)
  se = float(np.sqrt((g - 1) / g * np.sum((left_out - left_out.mean()) ** 2)))
  z = float(scipy.stats.norm.ppf(0.5 + level / 2))
  return estimate, estimate - z * se, estimate + z * se
