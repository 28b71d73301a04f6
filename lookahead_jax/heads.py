"""Training targets and losses of the tree-search heads (docs/design.md section 10).

The model's optional heads read the final hidden state at every position t (model.py):

  is-done head  (`model.done_head`): the logit of "the answer has ended with token t",
                trained toward [x_{t+1} = EOD] with a sigmoid cross-entropy at the tokens
                the loss weighs. MCTS (mcts.py) discounts a path's future by 1 - P(done).
  value head    (`model.value_head`): the distilled value of what follows t, the mean
                log-probability per token of the best H-token continuation that a
                width-B beam lookahead finds from t (`Heads.lookahead`, the config's
                lookahead as a beam; its best path score over H), trained with a squared
                error at the weighted anchors that lookahead reaches. Per token, so its
                scale does not grow with H; MCTS values a leaf by H times it, in the
                units of its rewards (log-probabilities), and a search that stops at
                depth d sees H tokens past its leaf, as far as beam search sees from the
                anchor. With `lookahead.reward = "task"` the target is instead the task's
                return (in [0, 1]) of the model's own continuation from t: its greedy
                H-token path (a width-1 beam), the answer so far plus that path judged
                by the testbed (mcts.Context); MCTS values a leaf by the head as it is.

Both losses are sums over the micro-batch divided by the global batch's weighted-token
count, like the next-token loss (train.objectives), and enter the loss with their weights
`train.value_weight` and `train.done_weight`. The targets are computed from the current
parameters under stop_gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lookahead_jax import decoding
from lookahead_jax import lookahead as lookahead_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Heads:
  """The heads a model trains (hashable: a static argument of the train step).

  lookahead:    the beam whose best path score is the value target (None: no value head);
                with reward "task" a width-1 beam, whose path's score is its return.
  eod_id:       the token that ends an answer, the done target (None: no done head).
  value_weight: the value loss's weight in the training loss.
  done_weight:  the done loss's weight.
  """

  lookahead: lookahead_lib.Lookahead | None
  eod_id: int | None
  value_weight: float
  done_weight: float

  @property
  def value_scale(self) -> float:
    """What the best path score is divided by for the value target: H (log-probs, per
    token), or 1 (the task's return, in [0, 1])."""
    return 1.0 if self.lookahead.reward == "task" else self.lookahead.horizon


def done_terms(done_logits: Array, targets: Array, weights: Array, eod_id: int
               ) -> dict[str, Array]:
  """Summed sigmoid cross-entropy of done_logits [b, T] toward [targets = eod_id] at the
  weighted tokens (weights [b, T]), and the count of weighted tokens that end an answer:
  {"done_sum", "done_correct", "done_ends"}."""
  ends = (targets == eod_id).astype(jnp.float32)
  loss = optax.sigmoid_binary_cross_entropy(done_logits, ends)
  right = (done_logits > 0) == (ends > 0)
  return {"done_sum": jnp.sum(loss * weights), "done_correct": jnp.sum(right * weights),
          "done_ends": jnp.sum(ends * weights)}


def value_terms(values: Array, paths: lookahead_lib.Paths, weights: Array, scale: float
                ) -> dict[str, Array]:
  """Summed squared error of values [b, T] against the best score of each anchor's beam
  paths over `scale` (`Heads.value_scale`; stop-gradient), at the weighted anchors whose
  lookahead ran (paths.valid): {"value_sum", "value_anchors", "value_target_sum"}."""
  best = jax.lax.stop_gradient(jnp.max(paths.score, axis=-1))
  counted = weights * (paths.valid & (best > decoding.NEG / 2))
  best = jnp.where(counted > 0, best / scale, 0.0)
  return {"value_sum": jnp.sum(jnp.square(values - best) * counted),
          "value_anchors": jnp.sum(counted), "value_target_sum": jnp.sum(best * counted)}


def loss(terms: dict[str, Array], heads: Heads, norm: Array) -> Array:
  """The heads' part of the training loss from their summed terms."""
  total = jnp.zeros(())
  if "value_sum" in terms:
    total += heads.value_weight * terms["value_sum"] / norm
  if "done_sum" in terms:
    total += heads.done_weight * terms["done_sum"] / norm
  return total


def metrics(aux: dict[str, Array], tokens: Array) -> dict[str, Array]:
  """The logged figures of a step's summed terms: value_loss (mean squared error per
  anchor) and value_target (the mean target: nats per token, or the mean return with the
  task reward), done_loss and done_accuracy (per weighted token)."""
  out = {}
  if "value_sum" in aux:
    anchors = jnp.maximum(aux["value_anchors"], 1.0)
    out.update(value_loss=aux["value_sum"] / anchors,
               value_target=aux["value_target_sum"] / anchors)
  if "done_sum" in aux:
    out.update(done_loss=aux["done_sum"] / tokens, done_accuracy=aux["done_correct"] / tokens)
  return out
