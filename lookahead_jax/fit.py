"""Fitting each side's tau and lam on validation NLL, and the family's best control.

docs/design.md section 2, "Fitting tau and lam": the mixture p~ of p with an amplified q
has two settings, the temperature tau of q and the weight lam of the mixture. Each side
of G (the lookahead q_H and the horizon-1 control q_1) gets its own, fitted on the
validation tokens of the part it reports (all, marked or unmarked tokens) by minimising
their mean NLL -log p~(y) with a bounded continuous optimiser (L-BFGS-B on exact JAX
gradients, from the best few points of a coarse start grid), as temperature scaling fits
its one scalar (Guo et al. 2017). The search space is

    1/tau in [0, MAX_INVERSE_TEMPERATURE]   (0: tau -> inf, q uniform over its paths)
    lam = 1 - exp(-u), u in [MIN_U, MAX_U]  (lam from ~0 to 1 - 1e-4)

so the control can reach the uniform-over-top-k limit and lam close to 1, and a fitted
value on a bound is reported as such (`Fit.on_bound`).

The control is the best horizon-1 sharpening of the whole family (`fit_control`): p's
top-k for every k up to the largest width evaluated, each with its own tau and lam; the
k with the lowest validation NLL is the control. Truncating p to its top 2 drops junk
that a top-4 truncation keeps, and a width-4 lookahead measured against a top-4 control
would be credited with that truncation.

Everything is computed once per pass and cached per token (`TokenCache`: p at the target
and at the paths' first tokens, the paths' scores), so a fit costs O(tokens * K) per
step and needs no model call. The loglinear mixture's normaliser needs
log sum_w p(w)^(1-lam) for every lam: it is cached on LAM_GRID and interpolated
(its curvature in lam is the variance of log p under p^(1-lam), so the linear
interpolation's error is at most Var / (8 * 256^2), under 1e-3 nats for Var < 500).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from lookahead_jax import decoding
from lookahead_jax import lookahead as lookahead_lib

Array = jax.Array
MAX_INVERSE_TEMPERATURE = 64.0  # 1/tau; tau = 1/64 is argmax for every practical purpose
MIN_U, MAX_U = 1e-6, math.log(1e4)  # lam = 1 - exp(-u): 1e-6 .. 0.9999
LAM_GRID = np.linspace(0.0, 1.0, 257)  # where the loglinear normaliser is cached
START_INVERSE = (0.0, 0.5, 1.0, 2.0, 8.0)
START_LAM = (0.03, 0.3, 0.7, 0.97, 0.999)
BUCKET = 512  # cached token counts are padded to a multiple of this (fewer compilations)


@flax.struct.dataclass
class TokenCache:
  """What a fit needs of every scored token of one lookahead, computed in the pass.

  log_p_y: [n] log p(y) at the target; targets: [n] int32;
  first:   [n, K] int32 the paths' first tokens; score: [n, K] their scores (Paths.score);
  log_p_k: [n, K] log p at `first`; valid: [n] bool the anchor has a lookahead (else both
           sides mix to p: Paths.valid);
  shared:  [n, len(LAM_GRID)] log sum_w p(w)^(1 - lam) on LAM_GRID (loglinear; [n, 0]
           when no loglinear mixture is evaluated).
  """

  log_p_y: Array
  targets: Array
  first: Array
  score: Array
  log_p_k: Array
  valid: Array
  shared: Array

  @property
  def size(self) -> int:
    return self.log_p_y.shape[0]


def pass_cache(log_p, paths: lookahead_lib.Paths, targets, loglinear: bool) -> TokenCache:
  """The cache [b, T, ...] of a teacher-forced pass (jittable): log_p [b, T, V], the
  lookahead's paths (or the control's), targets [b, T]. Flatten with `host_cache`."""
  lams = jnp.asarray(LAM_GRID if loglinear else LAM_GRID[:0], log_p.dtype)
  shared = jax.vmap(lambda lam: jax.nn.logsumexp((1.0 - lam) * log_p, axis=-1),
                    out_axes=-1)(lams)
  return TokenCache(log_p_y=lookahead_lib.token_log_prob(log_p, targets), targets=targets,
                    first=paths.first, score=paths.score,
                    log_p_k=jnp.take_along_axis(log_p, paths.first, axis=-1), valid=paths.valid,
                    shared=shared)


def host_cache(caches: list[TokenCache], keeps: list[np.ndarray]) -> TokenCache:
  """One host cache [n, ...] of the kept tokens (keep: [b, T] bool per batch) of a split's
  passes, padded with copies of its first token to a multiple of BUCKET (`weights` masks
  the padding)."""
  parts = {f.name: np.concatenate([np.asarray(getattr(c, f.name))[k] for c, k in
                                   zip(caches, keeps)])
           for f in dataclasses.fields(TokenCache)}
  n = len(parts["log_p_y"])
  pad = -n % BUCKET if n else BUCKET
  return TokenCache(**{k: np.concatenate([v, np.repeat(v[:1], pad, axis=0)]) if n else
                       np.zeros((pad,) + v.shape[1:], v.dtype) for k, v in parts.items()})


def weights_of(mask: np.ndarray, size: int) -> np.ndarray:
  """float32 [size] weights: `mask` ([n] bool, the tokens of a part) padded with zeros."""
  out = np.zeros(size, np.float32)
  out[:len(mask)] = mask
  return out


# ----------------------------------------------------------------------------- the NLL


def _truncated(cache: TokenCache, k) -> TokenCache:
  """The cache with only its first k paths (the others emptied: no mass at any tau); k may
  be traced, so every width shares one compilation."""
  keep = jnp.arange(cache.score.shape[-1]) < k
  return cache.replace(score=jnp.where(keep, cache.score, decoding.NEG))


def log_mixture(cache: TokenCache, inverse_temperature, lam, *, scheme: str,
                mixture: str) -> Array:
  """log p~(y) [n] of every cached token at (1/tau, lam), differentiable in both."""
  paths = lookahead_lib.Paths(first=cache.first, score=cache.score, valid=cache.valid)
  amp = lookahead_lib.amplify_inverse(paths, inverse_temperature, scheme)
  shared = None
  if mixture == "loglinear":
    grid = jnp.asarray(LAM_GRID, cache.shared.dtype)
    shared = jax.vmap(lambda row: jnp.interp(lam, grid, row))(cache.shared)
  return lookahead_lib.mix_target(amp, cache.log_p_y, cache.log_p_k, shared, cache.targets,
                                  lam, mixture)


def _lam(u):
  return -jnp.expm1(-u)


@functools.partial(jax.jit, static_argnames=("scheme", "mixture"))
def _nll(x, width, cache: TokenCache, weights, *, scheme: str, mixture: str):
  """Mean NLL of the weighted tokens at x = (1/tau, u) with the first `width` paths, and
  its gradient in x."""
  cache = _truncated(cache, width)

  def f(x):
    log_y = log_mixture(cache, x[0], _lam(x[1]), scheme=scheme, mixture=mixture)
    return -jnp.sum(jnp.where(weights > 0, log_y, 0.0) * weights) / jnp.maximum(
        weights.sum(), 1e-9)
  return jax.value_and_grad(f)(x)


@dataclasses.dataclass(frozen=True)
class Fit:
  """One side's fitted setting: top-k width (the control's; the lookahead's own width
  otherwise), tau (inf: uniform over the paths), lam, the validation NLL it reached, the
  naive NLL of the same tokens, and the bounds it sits on (names, e.g. ("tau=inf",))."""

  width: int
  temperature: float
  lam: float
  nll: float
  naive_nll: float
  on_bound: tuple[str, ...] = ()

  @property
  def inverse_temperature(self) -> float:
    return 0.0 if math.isinf(self.temperature) else 1.0 / self.temperature

  @property
  def gain(self) -> float:
    """Validation gain of the mixture over p (nats/token)."""
    return self.naive_nll - self.nll

  def describe(self) -> str:
    """e.g. "top-2, tau inf (bound), lam 0.973"."""
    bound = f" (on its bound: {', '.join(self.on_bound)})" if self.on_bound else ""
    return f"top-{self.width}, tau {self.temperature:.3g}, lam {self.lam:.4g}{bound}"

  def asdict(self) -> dict[str, Any]:
    return dict(width=self.width, temperature=self.temperature, lam=self.lam,
                validation_nll=self.nll, validation_gain=self.gain,
                on_bound=list(self.on_bound))


def fit_side(cache: TokenCache, weights: np.ndarray, *, scheme: str, mixture: str,
             width: int | None = None) -> Fit:
  """The (tau, lam) minimising the mean NLL of the weighted cached tokens.

  cache: a host cache [n, K] (`host_cache`); weights: [n] (0: not in the part). width:
  the paths used (the first `width` of K; None: all K). NaN NLL when no token weighs.
  """
  k = cache.first.shape[1] if width is None else width
  cache = jax.tree.map(jnp.asarray, cache)
  w = jnp.asarray(weights, jnp.float32)
  total = float(w.sum())
  naive = float(-(cache.log_p_y * w).sum() / total) if total else math.nan
  if not total:
    return Fit(k, 1.0, 0.0, math.nan, math.nan)
  bounds = [(0.0, MAX_INVERSE_TEMPERATURE), (MIN_U, MAX_U)]
  starts = np.array([(b, -math.log1p(-lam)) for b in START_INVERSE for lam in START_LAM],
                    np.float32)

  def objective(x):
    value, grad = _nll(jnp.asarray(x, jnp.float32), k, cache, w, scheme=scheme,
                       mixture=mixture)
    return float(value), np.asarray(grad, np.float64)

  grid = np.array([objective(x)[0] for x in starts])
  best = None
  for i in np.argsort(np.where(np.isfinite(grid), grid, np.inf))[:3]:
    res = scipy.optimize.minimize(objective, starts[i].astype(np.float64), jac=True,
                                  method="L-BFGS-B", bounds=bounds,
                                  options=dict(ftol=1e-10, gtol=1e-7, maxiter=200))
    improved = np.isfinite(res.fun) and float(res.fun) <= float(grid[i])
    value, x = (float(res.fun), res.x) if improved else (float(grid[i]), starts[i])
    if best is None or value < best[0]:
      best = (value, np.asarray(x, np.float64))
  value, (inv, u) = best
  on_bound = []
  if inv <= 1e-6:
    on_bound.append("tau=inf")
  elif inv >= MAX_INVERSE_TEMPERATURE * (1 - 1e-6):
    on_bound.append(f"tau=1/{MAX_INVERSE_TEMPERATURE:g}")
  if u <= MIN_U * 1.0001:
    on_bound.append("lam=0")
  elif u >= MAX_U * (1 - 1e-6):
    on_bound.append(f"lam={float(_lam(MAX_U)):.4g}")
  if k == 1 or u <= MIN_U * 1.0001:  # tau does nothing on one path, or without q
    on_bound = [b for b in on_bound if not b.startswith("tau")]
  tau = math.inf if inv <= 1e-6 else 1.0 / float(inv)
  return Fit(k, tau, float(_lam(u)), value, naive, tuple(on_bound))


def fit_control(cache: TokenCache, weights: np.ndarray, *, mixture: str, widths: range
                ) -> Fit:
  """The best horizon-1 sharpening of the family: top-k of p for k in `widths` (the
  control cache holds p's top max(widths) tokens, scored log p), each fitted; the k with
  the lowest validation NLL (the smallest k among ties within 1e-6 nats)."""
  fits = [fit_side(cache, weights, scheme="sum", mixture=mixture, width=k) for k in widths]
  nll = np.array([f.nll for f in fits])
  if np.isnan(nll).all():
    return fits[0]
  return fits[int(np.argmax(nll <= np.nanmin(nll) + 1e-6))]


def log_mixture_at(cache: TokenCache, fit: Fit, *, scheme: str, mixture: str) -> np.ndarray:
  """log p~(y) [n] of the cached tokens at a fitted setting (test tokens)."""
  return np.asarray(_log_mixture_at(jax.tree.map(jnp.asarray, cache), fit.width,
                                    jnp.float32(fit.inverse_temperature), jnp.float32(fit.lam),
                                    scheme=scheme, mixture=mixture), np.float64)


@functools.partial(jax.jit, static_argnames=("scheme", "mixture"))
def _log_mixture_at(cache, width, inverse_temperature, lam, *, scheme, mixture):
  return log_mixture(_truncated(cache, width), inverse_temperature, lam, scheme=scheme,
                     mixture=mixture)


# ----------------------------------------------------------------------------- a split


@dataclasses.dataclass(frozen=True)
class Split:
  """The scored tokens of a set of held-out batches, on the host.

  lookaheads: {name: cache} of each lookahead's paths; control: the control family's
  cache (p's top-k, k up to the largest width evaluated); row: [n] int the row (sequence)
  each token sits in, numbered over the batches, for intervals that resample rows; group:
  [n] int its mark group (0: unmarked; path_star: the goal's depth); right: [n] bool
  argmax == target, where the pass gave it. Caches are padded past n (fit.BUCKET).
  """

  lookaheads: dict[str, TokenCache]
  control: TokenCache
  row: np.ndarray
  group: np.ndarray
  right: np.ndarray | None = None

  @property
  def n(self) -> int:
    return len(self.row)

  def part(self, name: str) -> np.ndarray:
    """[n] bool: the tokens of a part, "all", "marked" or "unmarked"."""
    if name == "all":
      return np.ones(self.n, bool)
    return (self.group > 0) if name == "marked" else (self.group == 0)


def host_split(outs: list[dict[str, Any]], keeps: list[np.ndarray]) -> Split:
  """The `Split` of a pass's host outputs, one dict per batch: "caches" {name: TokenCache
  [b, T, ...]}, "control" (its TokenCache), "group" [b, T] and optionally "right" [b, T];
  keeps: [b, T] bool per batch, the tokens kept. The lookaheads' caches take the
  control's loglinear normaliser (it depends on p alone, so the pass computes it once)."""
  control = host_cache([o["control"] for o in outs], keeps)
  lookaheads = {name: host_cache([o["caches"][name] for o in outs], keeps).replace(
      shared=control.shared) for name in outs[0]["caches"]}
  rows, first = [], 0
  for keep in keeps:
    b, t = keep.shape
    rows.append(np.broadcast_to(np.arange(first, first + b)[:, None], (b, t))[keep])
    first += b
  pick = lambda key: np.concatenate([np.asarray(o[key])[k] for o, k in zip(outs, keeps)])
  return Split(lookaheads=lookaheads, control=control, row=np.concatenate(rows),
               group=pick("group").astype(np.int64),
               right=pick("right").astype(bool) if "right" in outs[0] else None)


def fit_parts(val: Split, test: Split, parts: tuple[str, ...], *, name: str, scheme: str,
              mixture: str, control_widths: range) -> dict[str, dict[str, Any]]:
  """Each part's two sides, lookahead `name` and the control, fitted on its validation
  tokens and scored on every test token.

  Returns {part: {"H": Fit, "control": Fit, "gain_H": [n_test], "gain_1": [n_test]}}, the
  gains log p~(y) - log p(y) of each test token at the part's fits (NaN fits and gains
  for a part without validation tokens).
  """
  out = {}
  log_p_y = np.asarray(test.control.log_p_y[:test.n], np.float64)
  for part in parts:
    w = weights_of(val.part(part), val.control.size)
    side = fit_side(val.lookaheads[name], w, scheme=scheme, mixture=mixture)
    control = fit_control(val.control, w, mixture=mixture, widths=control_widths)
    if math.isnan(side.nll):
      nan = np.full(test.n, math.nan)
      out[part] = dict(H=side, control=control, gain_H=nan, gain_1=nan)
      continue
    mixed_h = log_mixture_at(test.lookaheads[name], side, scheme=scheme, mixture=mixture)[:test.n]
    mixed_1 = log_mixture_at(test.control, control, scheme="sum", mixture=mixture)[:test.n]
    out[part] = dict(H=side, control=control, gain_H=mixed_h - log_p_y,
                     gain_1=mixed_1 - log_p_y)
  return out
