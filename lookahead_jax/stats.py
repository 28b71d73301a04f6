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

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.special


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
  half = float(scipy.special.stdtrit(len(x) - 1, 0.5 + level / 2) * x.std(ddof=1) / np.sqrt(len(x)))
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
  z = float(scipy.special.ndtri(0.5 + level / 2))
  return estimate, estimate - z * se, estimate + z * se


def row_interval(values: np.ndarray, rows: np.ndarray, weights: np.ndarray,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, lo, hi) of per-token values, the interval resampling whole rows.

  values: [..., n] per-token values (several quantities at once, paired); rows: [n] int
  the row of each token, in 0..R-1; weights: [resamples, R] (`resample_counts`, the same
  for every quantity compared). Tokens of one row (several marks of one poem) move
  together, so the interval is wider than one that resamples tokens when they correlate.
  NaN without a token.
  """
  values = np.asarray(values, np.float64)
  n_rows = weights.shape[1]
  sums = np.zeros(values.shape[:-1] + (n_rows,))
  np.add.at(sums, (..., rows), values)
  counts = np.bincount(rows, minlength=n_rows).astype(np.float64)
  total = counts.sum()
  mean = sums.sum(-1) / total if total else np.full(values.shape[:-1], np.nan)
  lo, hi = bootstrap_ratio(sums, counts, weights, level)
  return mean, lo, hi


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0,
                          level: float = 0.95, paired: bool = True
                          ) -> tuple[float, float, float]:
  """(diff, lo, hi): the mean over seeds of mean_graphs(a) - mean_graphs(b), with a
  percentile interval from a bootstrap over graphs (items), paired across runs.

  a, b: [seeds, n] per-graph values of two modes; row i of each is the same seed index
  (seed i of the mode against seed i of the baseline), column j the same test graph. Each
  resample draws n graph indices with replacement, the same for every seed and for both
  modes (`paired`; False draws b's graphs independently, for contrast), and takes the
  difference of the means over seeds. NaN entries (a graph without a value) are left out
  of their run's mean. The seeds themselves are not resampled: the interval is over graphs.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(f"a and b must be [seeds, n] of one shape; got {a.shape} and {b.shape}")
  n = a.shape[1]

  def means(x: np.ndarray, weights: np.ndarray) -> np.ndarray:  # [seeds, n] -> [resamples]
    valid = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
      per_seed = (np.where(valid, x, 0.0) @ weights.T) / (valid.astype(np.float64) @ weights.T)
    return per_seed.mean(0)

  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a run without any value: NaN
    diff = float(np.mean(np.nanmean(a, 1) - np.nanmean(b, 1)))
  weights = resample_counts(n, resamples, seed)
  other = weights if paired else resample_counts(n, resamples, seed + 1)
  diffs = means(a, weights) - means(b, other)
  if n == 0 or np.isnan(diffs).all():
    return diff, float("nan"), float("nan")
  tail = 100 * (1 - level) / 2
  lo, hi = np.nanpercentile(diffs, [tail, 100 - tail])
  return diff, float(lo), float(hi)
