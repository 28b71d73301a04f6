"""Stunting (DESIGN.md section 3): train on next tokens while skipping, penalising or
balancing the parts of each update that would teach the model its own lookahead.

Inside the train step, from the current parameters under stop_gradient and reusing the
step's teacher-forced pass, the lookahead gives every token i (target y_i, naive p_i)
an amplified q_i (sparse, lookahead.Amplified) and the mixture q~_i. Then

  toward_i = q~_i(y_i) > p_i(y_i)            the mixture predicts the truth better
  m_i      = <e_{y_i} - p_i, q_i - p_i>      first-order change of alignment caused by a
                                             gradient step on token i, on its logits
  A        = sum_i sum_w q_i(w) log p_i(w)   alignment; g_A = grad A

and g = -grad(loss) is the direction an update moves the parameters, so <g, g_A> > 0
means the update raises the alignment (moves the model toward the amplified one).

Modes (`stunting.mode`):
  none        plain next-token loss.
  v1_token    toward tokens get weight 0; the other tokens' gradient is unchanged.
  v1_update   the whole update is skipped when <g, g_A> > 0 (counted as skipped).
  v2_penalty  loss + penalty * mean_i sum_w q_i(w) p_i(w): a bounded push away from the
              tokens the amplified model favours.
  v3_balance  per-token weights, one for toward tokens (m > 0) and one for away tokens
              (m < 0), chosen so that sum_i w_i m_i hits its target exactly within the
              step while the mean weight stays 1 (counts and magnitudes balanced). The
              target is minus an EMA of the movement earlier steps could not balance (a
              step with tokens on one side only), so the balance also holds over time.
  v3_project  g <- g - (<g, g_A> / |g_A|^2) g_A: no first-order movement either way.
  v4          stunting.v4_base with SMC lookahead instead of beam lookahead.
  myopic      attention to earlier positions reads stop-gradient keys/values, so no
              position is trained to help later ones (the literature's comparator).

Every quantity here costs O(K) per token on top of the logits (q has K = width atoms).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lookahead_jax import lookahead as lookahead_lib

Array = jax.Array
MODES = ("none", "v1_token", "v1_update", "v2_penalty", "v3_balance", "v3_project", "v4",
         "myopic")
LOOKAHEAD_MODES = ("v1_token", "v1_update", "v2_penalty", "v3_balance", "v3_project")


@dataclasses.dataclass(frozen=True)
class Stunting:
  """Static settings of the stunted step (hashable; a static argument of the jitted step).

  mode:            the effective mode (v4 is resolved to its base, with an SMC lookahead).
  lookahead:       the stunting lookahead; None for modes without one.
  temperature, scheme, mixture, lam: how q and the mixture q~ are read off the paths.
  beta:            SMC tempering.
  penalty:         v2_penalty coefficient.
  debt_decay:      v3_balance: per-step decay of the movement left unbalanced.
  alignment_every: steps between computations of g_A for the logged cos(g, g_A) in modes
                   that do not need g_A (v1_update and v3_project compute it every step).
  """

  mode: str = "none"
  lookahead: lookahead_lib.Lookahead | None = None
  temperature: float = 1.0
  scheme: str = "sum"
  mixture: str = "linear"
  lam: float = 0.5
  beta: float = 4.0
  penalty: float = 1.0
  debt_decay: float = 0.9
  alignment_every: int = 10

  @property
  def needs_alignment_grad(self) -> bool:
    return self.mode in ("v1_update", "v3_project")


# ----------------------------------------------------------------------------- per token


def token_terms(log_p, targets, amp: lookahead_lib.Amplified, stunting: Stunting
                ) -> dict[str, Array]:
  """Per-token quantities [b, T] of section 3, from log p [b, T, V] (pass it stop-gradient).

  toward (bool), m (movement), kl (KL(q || p)); all 0 / False where an anchor has no
  lookahead (q = p there).
  """
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  mix_y = lookahead_lib.mix_at(amp, log_p, targets, stunting.lam, stunting.mixture)
  log_p_k = jnp.take_along_axis(log_p, amp.tokens, axis=-1)  # [b, T, K]
  p_dot_q = amp.expect(jnp.exp(log_p_k))
  p_dot_p = jnp.sum(jnp.exp(2.0 * log_p), axis=-1)
  m = jnp.exp(amp.at(targets)) - jnp.exp(log_p_y) - p_dot_q + p_dot_p
  kl = amp.expect(jnp.where(amp.log_q > -jnp.inf, amp.log_q - log_p_k, 0.0))
  return dict(toward=amp.valid & (mix_y > log_p_y), m=jnp.where(amp.valid, m, 0.0),
              kl=jnp.where(amp.valid, kl, 0.0))


def alignment(log_p, amp: lookahead_lib.Amplified) -> Array:
  """sum_w q(w) log p(w) [b, T], differentiable in log_p (0 where q = p by definition)."""
  return jnp.where(amp.valid, amp.expect(jnp.take_along_axis(log_p, amp.tokens, axis=-1)), 0.0)


def penalty(log_p, amp: lookahead_lib.Amplified) -> Array:
  """sum_w q(w) p(w) in [0, 1] [b, T], differentiable in log_p (v2_penalty)."""
  p_k = jnp.exp(jnp.take_along_axis(log_p, amp.tokens, axis=-1))
  return jnp.where(amp.valid, amp.expect(p_k), 0.0)


def balance_weights(m, weights, target) -> tuple[Array, Array]:
  """v3_balance: token weights [b, T] with sum_i w_i m_i = target and mean weight 1.

  m: movements [b, T]; weights: the batch weights [b, T] (0 = padding); target: [].
  Toward tokens (m > 0, total P over n+ tokens) get a, away tokens (m < 0, total |.| N over
  n- tokens) get b, the rest 1:  a P - b N = target  and  a n+ + b n- = n+ + n-.
  Weights are clipped at 0. When one side is empty (or the solution would need a negative
  weight) the step keeps weight 1 on both sides and returns the movement it leaves.
  Returns (per-token weights times `weights`, realized sum_i w_i m_i).
  """
  up, down = (m > 0) * weights, (m < 0) * weights
  p_sum, n_sum = jnp.sum(up * m), -jnp.sum(down * m)
  n_up, n_down = jnp.sum(up), jnp.sum(down)
  denom = n_sum * n_up + p_sum * n_down
  count = n_up + n_down
  a = (n_sum * count + target * n_down) / jnp.where(denom > 0, denom, 1.0)
  b = (p_sum * count - target * n_up) / jnp.where(denom > 0, denom, 1.0)
  ok = (denom > 0) & (a >= 0) & (b >= 0)
  a, b = jnp.where(ok, a, 1.0), jnp.where(ok, b, 1.0)
  w = weights * jnp.where(m > 0, a, jnp.where(m < 0, b, 1.0))
  return w, jnp.sum(w * m)


# ----------------------------------------------------------------------------- gradients


def tree_dot(a, b) -> Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def project_out(grads, grads_a):
  """grads minus its component along grads_a (v3_project)."""
  scale = tree_dot(grads, grads_a) / jnp.maximum(tree_dot(grads_a, grads_a), 1e-30)
  return jax.tree.map(lambda g, a: g - scale * a, grads, grads_a)


def cosine(a, b) -> Array:
  return tree_dot(a, b) / jnp.maximum(jnp.sqrt(tree_dot(a, a) * tree_dot(b, b)), 1e-30)


# ----------------------------------------------------------------------------- monitoring


def monitor_gains(params, batch, rng, *, config, lookaheads: dict[str, lookahead_lib.Lookahead],
                  stunting: Stunting) -> dict[str, Array]:
  """Lookahead gain and "helps" fraction on a held-out batch, one pair per lookahead.

  lookaheads: {name: Lookahead}, e.g. {"stunting": ..., "dev": ...}; q and the mixture
  are read with the stunting settings. Returns {"gain_<name>", "helps_<name>"}.
  """
  from lookahead_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=config,
                                    segment_ids=batch["segment_ids"])
  log_p = jax.nn.log_softmax(logits)
  log_p_y = lookahead_lib.token_log_prob(log_p, batch["targets"])
  out: dict[str, Any] = {}
  for i, (name, la) in enumerate(sorted(lookaheads.items())):
    paths = lookahead_lib.paths_from_pass(params, logits, cache, batch["positions"],
                                          batch["segment_ids"], jax.random.fold_in(rng, i),
                                          stunting.beta, config=config, lookahead=la)
    amp = lookahead_lib.amplify(paths, stunting.temperature, stunting.scheme)
    mixed = lookahead_lib.mix_at(amp, log_p, batch["targets"], stunting.lam, stunting.mixture)
    out[f"gain_{name}"], out[f"helps_{name}"] = lookahead_lib.gain(log_p_y, mixed,
                                                                   batch["weights"])
  return out
