"""Internal-lookahead probes: what the activations say beside the behavioural gain G.

G vanishes both when the model does the lookahead itself and when nothing can help;
probes of the hidden states tell the two apart (docs/design.md section 9). All read one
teacher-forced pass with `model.forward(..., internals=True)`:

- future-token probe (Pal et al. 2023; Wu et al. 2024): a linear softmax probe from the
  frozen residual stream of layer l at position t to the token x_{t+k}, k = 2..K, fit by
  Adam on one batch and scored (NLL, accuracy) on another, beside the same probe fit on
  the token embedding of x_t alone (the floor: what x_t by itself says about x_{t+k}).
  Its gain, floor NLL - probe NLL, is what layer l knows about a token it has not seen.
  On path_star also the probe at the marked tokens' inputs (the tokens the testbed marks
  as needing lookahead: the input is the path marker, or the source with node labels;
  the target the first step toward the goal).
- in-context-learning score (Olsson et al. 2022): the mean loss of tokens at a late
  position minus at an early one; theirs is token 500 minus token 50 of 512, here the
  positions are scaled to the row length T (`icl_positions`).
- induction (prefix-matching) score of every head: on random token sequences repeated
  twice, the attention from a token of the repeat to the token after its first
  occurrence.
- logit lens: the next-token NLL read from every layer's residual stream through the
  final LayerNorm and the tied unembedding (the last layer's is the model's own NLL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lookahead_jax import model as model_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Probes:
  """What the probes compute (static: shapes and loops; settings.validate derives
  every field from the config's probes section).

  max_offset:       K, the future-token probes predict x_{t+k} for k = 2..K.
  layers:           the layers (1..num_layers) whose residual stream is probed.
  steps:            Adam steps of every probe fit (full batch).
  learning_rate:    Adam's learning rate (the features are standardised first).
  l2:               L2 penalty on the probe's weights.
  induction_rows:   random sequences of the induction score.
  induction_length: m, each sequence is m random tokens, then the same m again.
  marked:           also probe at the tokens the testbed marks (path_star: the first steps).
  eval_batches:     the evaluation's batches of each split (evals/probes.py).
  """

  max_offset: int
  layers: tuple[int, ...]
  steps: int
  learning_rate: float
  l2: float
  induction_rows: int
  induction_length: int
  marked: bool
  eval_batches: int

  @property
  def offsets(self) -> tuple[int, ...]:
    return tuple(range(2, self.max_offset + 1))


# ----------------------------------------------------------------------------- linear probe


def fit_probe(x_fit: Array, y_fit: Array, w_fit: Array, x_score: Array, y_score: Array,
              w_score: Array, *, num_classes: int, steps: int, learning_rate: float,
              l2: float) -> dict[str, Array]:
  """A linear softmax probe fit on one set of features and scored on another.

  x_*: [N, d] features, y_*: [N] int32 labels, w_*: [N] token weights (0: not used).
  The features are standardised with the fit set's weighted mean and deviation; W [d, C]
  and b [C] start at zero and take `steps` full-batch Adam steps on the weighted mean
  cross-entropy plus l2/2 |W|^2 (a convex problem: no seed). Returns the score set's
  weighted mean NLL and accuracy (scalars; NaN when w_score is all zero).
  """
  x_fit, x_score = x_fit.astype(jnp.float32), x_score.astype(jnp.float32)
  total = jnp.maximum(w_fit.sum(), 1.0)
  mean = (w_fit[:, None] * x_fit).sum(0) / total
  std = jnp.sqrt((w_fit[:, None] * (x_fit - mean) ** 2).sum(0) / total) + 1e-6
  x_fit, x_score = (x_fit - mean) / std, (x_score - mean) / std
  d = x_fit.shape[-1]
  probe = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adam(learning_rate)

  def loss(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(x_fit @ p["w"] + p["b"], y_fit)
    return (w_fit * ce).sum() / total + 0.5 * l2 * jnp.sum(p["w"] ** 2)

  def step(carry, _):
    p, opt = carry
    updates, opt = tx.update(jax.grad(loss)(p), opt, p)
    return (optax.apply_updates(p, updates), opt), None

  (probe, _), _ = jax.lax.scan(step, (probe, tx.init(probe)), None, length=steps)
  logits = x_score @ probe["w"] + probe["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_score)
  hit = (jnp.argmax(logits, -1) == y_score).astype(jnp.float32)
  n = w_score.sum()
  return {"nll": (w_score * ce).sum() / n, "accuracy": (w_score * hit).sum() / n}


def future_labels(batch: Mapping[str, Array], k: int) -> tuple[Array, Array]:
  """x_{t+k} for every input position t of a pipeline batch, and where it exists.

  x_{t+k} is targets[t+k-1]; it counts where both t and t+k-1 hold real tokens of the
  same piece. Returns labels [b, T] int32 and weights [b, T] float32.
  """
  targets, w, seg = batch["targets"], batch["weights"], batch["segment_ids"]
  s = k - 1
  pad = lambda x: jnp.pad(x[:, s:], ((0, 0), (0, s)))
  same = (pad(seg) == seg) & (seg > 0)
  return pad(targets), w * pad(w) * same.astype(w.dtype)


def future_token_probe(fit_features: Array, fit_batch: Mapping[str, Array],
                       score_features: Array, score_batch: Mapping[str, Array], *,
                       offsets: tuple[int, ...], num_classes: int, steps: int,
                       learning_rate: float, l2: float) -> dict[str, Array]:
  """Linear probes from features at t to x_{t+k}, for every feature set and offset.

  *_features: [F, b, T, d] (e.g. the token embedding, then layers' hidden states), of
  the fit and the score batch. Every (feature set, offset) is fit by the same
  `fit_probe` (vmapped). Returns nll and accuracy [F, len(offsets)] on the score batch.
  """
  def labels(batch):
    y, w = zip(*(future_labels(batch, k) for k in offsets))
    return jnp.stack(y).reshape(len(offsets), -1), jnp.stack(w).reshape(len(offsets), -1)

  (y_fit, w_fit), (y_score, w_score) = labels(fit_batch), labels(score_batch)
  flat = lambda f: f.reshape(f.shape[0], -1, f.shape[-1])
  fit = lambda xf, yf, wf, xs, ys, ws: fit_probe(xf, yf, wf, xs, ys, ws, num_classes=num_classes,
                                                 steps=steps, learning_rate=learning_rate, l2=l2)
  per_offset = jax.vmap(fit, in_axes=(None, 0, 0, None, 0, 0))  # over offsets
  per_feature = jax.vmap(per_offset, in_axes=(0, None, None, 0, None, None))  # over features
  return per_feature(flat(fit_features), y_fit, w_fit, flat(score_features), y_score, w_score)


# ----------------------------------------------------------------------------- the other probes


def icl_positions(row_length: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """The early and late windows [start, stop) of the ICL score for rows of T tokens.

  Olsson et al.'s token 50 and token 500 of 512, scaled: starts at floor(T * 50/512) and
  floor(T * 500/512), each window w = max(1, T // 64) positions (8 at T = 512), the late
  one moved left to end by T. T = 128: positions 12-13 and 125-126.
  """
  w = max(1, row_length // 64)
  early = row_length * 50 // 512
  late = min(row_length * 500 // 512, row_length - w)
  return (early, early + w), (late, late + w)


def icl_score(token_nll: Array, positions: Array, weights: Array,
              row_length: int) -> dict[str, Array]:
  """Mean loss of tokens in the late window minus in the early one (`icl_positions`).

  token_nll, positions, weights: [b, T] (positions within each piece, as the pipeline
  gives them). Negative: later tokens are predicted better, from the context. Returns
  icl_score, icl_early and icl_late (NaN where a window holds no token).
  """
  (e0, e1), (l0, l1) = icl_positions(row_length)

  def window(lo, hi):
    w = weights * ((positions >= lo) & (positions < hi)).astype(weights.dtype)
    return (w * token_nll).sum() / w.sum()

  early, late = window(e0, e1), window(l0, l1)
  return {"icl_score": late - early, "icl_early": early, "icl_late": late}


def prefix_matching_score(attention: Array, length: int) -> Array:
  """Per-head induction score from attention over sequences of m tokens repeated twice.

  attention: [L, b, h, 2m, 2m] weights (query, key); token m+i repeats token i, whose
  successor sits at i+1. Returns [L, h]: the mean weight from m+i to i+1 over i < m and
  the rows (1: a perfect induction head; a head that reads only itself scores 0).
  """
  i = jnp.arange(length)
  return attention[:, :, :, length + i, i + 1].mean((1, 3))


def induction_scores(params, rng: Array, *, config: model_lib.Config, rows: int,
                     length: int) -> Array:
  """Prefix-matching score [L, h] of every head on `rows` random sequences repeated twice."""
  tokens = jax.random.randint(rng, (rows, length), 0, config.vocab_size)
  tokens = jnp.concatenate([tokens, tokens], axis=1)
  positions = jnp.broadcast_to(jnp.arange(2 * length), tokens.shape)
  *_, internals = model_lib.forward(params, tokens, positions, config=config, internals=True)
  return prefix_matching_score(internals["attention"], length)


def logit_lens(params, hidden: Array, targets: Array, weights: Array, *,
               config: model_lib.Config) -> Array:
  """Next-token NLL [L+1] read from each residual stream hidden [L+1, b, T, d].

  Each layer's stream goes through the final LayerNorm and the tied unembedding, as the
  last one does in the model (so entry L is the model's own NLL).
  """
  model = nnx.merge(model_lib.graphdef(config), params)
  layers, b, n, d = hidden.shape

  def nll(h):
    logits = model.wte.attend(model.ln_f(h.reshape(b * n, d))).astype(jnp.float32)
    token = optax.softmax_cross_entropy_with_integer_labels(logits.reshape(b, n, -1), targets)
    return (weights * token).sum() / weights.sum()

  return jax.lax.map(nll, hidden)


# ----------------------------------------------------------------------------- all of them


def probe_metrics(params, fit_batch: Mapping[str, Array], score_batch: Mapping[str, Array],
                  rng: Array, *, config: model_lib.Config, probes: Probes) -> dict[str, Array]:
  """Every probe: fit on `fit_batch`, scored (and the rest read) on `score_batch`.

  Batches: the pipeline's arrays [b, T]. rng draws the induction sequences. Returns
  future_nll, future_accuracy [1 + len(layers), K-1] (row 0: the token-embedding floor,
  then probes.layers; columns k = 2..K); marked_nll, marked_accuracy [1 + len(layers)]
  (probes.marked only); lens_nll [L+1] (embeddings, then each block); icl_score,
  icl_early, icl_late; induction [L, h]; score_tokens (the score batch's real tokens).
  """
  model = nnx.merge(model_lib.graphdef(config), params)

  def features(batch):
    logits, _, internals = model_lib.forward(params, batch["inputs"], batch["positions"],
                                             config=config, segment_ids=batch["segment_ids"],
                                             internals=True)
    hidden = internals["hidden"]
    embed = model.wte(batch["inputs"]).astype(jnp.float32)
    layers = jnp.asarray(probes.layers)
    return logits, hidden, jnp.concatenate([embed[None], hidden[layers].astype(jnp.float32)])

  _, _, fit_x = features(fit_batch)
  logits, hidden, score_x = features(score_batch)
  fit = dict(num_classes=config.vocab_size, steps=probes.steps,
             learning_rate=probes.learning_rate, l2=probes.l2)
  future = future_token_probe(fit_x, fit_batch, score_x, score_batch, offsets=probes.offsets,
                              **fit)
  out = {"future_nll": future["nll"], "future_accuracy": future["accuracy"]}
  if probes.marked:
    def at_marks(batch, x):
      w = batch["weights"] * batch["needs_lookahead"].astype(jnp.float32)
      return x.reshape(x.shape[0], -1, x.shape[-1]), batch["targets"].reshape(-1), w.reshape(-1)

    (xf, yf, wf), (xs, ys, ws) = at_marks(fit_batch, fit_x), at_marks(score_batch, score_x)
    marked = jax.vmap(lambda a, b: fit_probe(a, yf, wf, b, ys, ws, **fit))(xf, xs)
    out.update(marked_nll=marked["nll"], marked_accuracy=marked["accuracy"])
  targets, w = score_batch["targets"], score_batch["weights"]
  out["lens_nll"] = logit_lens(params, hidden, targets, w, config=config)
  token_nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  out.update(icl_score(token_nll, score_batch["positions"], w, targets.shape[1]),
             score_tokens=w.sum())
  out["induction"] = induction_scores(params, rng, config=config, rows=probes.induction_rows,
                                      length=probes.induction_length)
  return out


def named(out: Mapping[str, Any], probes: Probes) -> dict[str, float]:
  """The probes' scalars by name, for metrics and tables (host floats).

  future_gain_k<k>: the best layer's gain over the embedding floor at offset k (floor
  NLL - probe NLL, nats); future_gain: its mean over k = 2..K. probe_k<k>_<emb|L<l>>_nll
  and _acc; marked_<emb|L<l>>_nll and _acc; lens_L<l>_nll (L0: the embeddings);
  icl_score, icl_early, icl_late; induction_L<l>H<h> and induction_max.
  """
  out = {k: np.asarray(v, np.float64) for k, v in out.items()}
  names = ["emb"] + [f"L{layer}" for layer in probes.layers]
  values: dict[str, float] = {}
  gains = out["future_nll"][0] - out["future_nll"][1:].min(0)  # [K-1]
  for j, k in enumerate(probes.offsets):
    values[f"future_gain_k{k}"] = float(gains[j])
    for i, name in enumerate(names):
      values[f"probe_k{k}_{name}_nll"] = float(out["future_nll"][i, j])
      values[f"probe_k{k}_{name}_acc"] = float(out["future_accuracy"][i, j])
  values["future_gain"] = float(gains.mean())
  if "marked_nll" in out:
    for i, name in enumerate(names):
      values[f"marked_{name}_nll"] = float(out["marked_nll"][i])
      values[f"marked_{name}_acc"] = float(out["marked_accuracy"][i])
  for layer, nll in enumerate(out["lens_nll"]):
    values[f"lens_L{layer}_nll"] = float(nll)
  for key in ("icl_score", "icl_early", "icl_late"):
    values[key] = float(out[key])
  for (layer, head), score in np.ndenumerate(out["induction"]):
    values[f"induction_L{layer + 1}H{head}"] = float(score)
  values["induction_max"] = float(out["induction"].max())
  return values
