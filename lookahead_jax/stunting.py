"""Stunting (docs/design.md section 3): train on next tokens while skipping, penalising or
balancing the parts of each update that would teach the model its own lookahead.

Inside the train step, from the current parameters under stop_gradient and reusing the
step's teacher-forced pass, the lookahead gives every token i (target y_i, naive p_i)
an amplified q_{i,H} (sparse, lookahead.Amplified) and its mixture q~_{i,H}; its
horizon-1 control gives q_{i,1} and q~_{i,1} (p sharpened, no look ahead). Stunting
must act on lookahead, not on sharpening, so with `contrast="control"` (the default)
every quantity is taken on the contrast d_i = q_{i,H} - q_{i,1}:

  gain_i   = log q~_{i,H}(y_i) - log q~_{i,1}(y_i)   how much better (in nats) looking
                                                    ahead predicts the truth than
                                                    sharpening does
  toward_i = gain_i > margin                        ... by more than `stunting.margin`
  m_i      = <e_{y_i} - p_i, d_i>                   first-order change of alignment caused by
                                                    a gradient step on token i, on its logits
  A        = sum_i sum_w d_i(w) log p_i(w)          alignment; g_A = grad A

The margin (default 0.01 nats, `Stunting.margin`) keeps confident correct tokens from
counting as toward: at p(y) = 0.999 both mixtures are within ~1e-3 of 1 and gain_i is
~2e-4 nats, while a lookahead that tells two equally likely arms apart gives gain_i of
log(1 + lam) ~ 0.1-0.7 nats at lam 0.1-0.97 (q~_H(y) = (1 - lam) / 2 + lam against
q~_1(y) = 1 / 2).

With `contrast="naive"` (earlier runs): gain_i = log q~_i(y_i) - log p_i(y_i), d_i =
q_i - p_i in m_i and d_i = q_i in A, the definitions against p alone. g = -grad(loss) is
the direction a gradient step moves the parameters, so <g, g_A> > 0 means it raises the
alignment (moves the model toward the amplified one). At horizon 1 the contrast is 0.

Modes (`stunting.mode`) are objects with hooks (`MODES[name]`, `Stunting.hooks`): the
train step calls them and names no mode. The base `Mode` changes nothing; a mode overrides
what it changes: `myopic` and `needs_alignment_grad` (flags), `token_weights` (the
per-token loss weights and their summed statistics), `extra_loss` (a term added to the
loss) and `edit_update` (the update the optimizer would apply, the skip and the v3_balance
debt). The modes:
  none        plain next-token loss.
  v1_token    toward tokens (gain_i > margin) get weight 0; the other tokens' gradient is
              unchanged.
  v1_update   the whole update is skipped when <u, g_A> > 0, u the update the optimizer
              would apply (optax's `updates`: after clipping, Adam's preconditioning and
              AdamW's weight decay, already in the descent direction). A skipped step
              changes neither the parameters nor the optimizer state (the Adam moments and
              the schedule's count do not advance) and is counted as skipped.
  v2_penalty  loss + penalty * mean_i sum_w d_i(w) p_i(w) (naive: q_i for d_i): a
              bounded (|.| <= 1) push away from the tokens lookahead favours.
  v3_balance  per-token weights, a for toward tokens (m > 0) and b for away tokens (m < 0),
              chosen so that sum_i w_i m_i hits its target within the step while the mean
              weight stays 1 (counts and magnitudes balanced). The target is minus a
              decaying debt, the movement earlier steps left unbalanced, so the balance also
              holds over time. A target out of reach in the step (beyond a = 0 or b = 0) is
              clipped to the nearest reachable movement and met there; a step with tokens
              on one side only cannot balance and keeps weight 1 (see balance_weights).
              Logged every step: balanced_step (1 when both sides were present, so the
              movement met the clipped target; with grad_accum the share of micro-batches),
              balance_clipped (the target was out of reach) and balance_debt.
  v3_project  u <- u - (<u, g_A> / |g_A|^2) g_A on the update u the optimizer would apply
              (weight decay included), which is then applied: the applied step has no
              first-order movement of A either way. The optimizer state is updated from the
              raw gradient as in a plain step.
  v4          stunting.v4_base with SMC lookahead instead of beam lookahead (no hooks of
              its own: settings.py resolves it to its base before `Stunting` is built).
  distill     the positive control, the opposite of stunting: loss + distill *
              mean_i KL(q~_{i,H} || p_i), training toward the amplified mixture.
  myopic      attention to earlier positions reads stop-gradient keys/values, so no
              position is trained to help later ones (the literature's comparator).

Every quantity here costs O(K) per token on top of the logits (q has K = width atoms),
except distill's KL, which reads the dense mixture (O(V)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lookahead_jax import config as config_lib
from lookahead_jax import lookahead as lookahead_lib

Array = jax.Array
PyTree = Any
CONTRASTS = ("control", "naive")
# MODES (name -> hooks) and LOOKAHEAD_MODES (the names of modes with a lookahead) are
# defined with the modes, at the end.


_DEFAULT = config_lib.defaults("stunting")  # the schema declares the defaults


@dataclasses.dataclass(frozen=True)
class Stunting:
  """Static settings of the stunted step (hashable; a static argument of the jitted step).

  mode:            the effective mode, a key of MODES (v4 is resolved to its base, with an
                   SMC lookahead); `hooks` is its object.
  lookahead:       the stunting lookahead; None for modes without one.
  contrast:        "control" (q_H against its horizon-1 control) or "naive" (q against p).
  mixture:         how q and the mixture q~ are formed (the run's one lookahead_lib.Mixture).
  penalty:         v2_penalty coefficient.
  distill:         distill: coefficient of KL(q~_H || p).
  margin:          a token is toward when log q~_H(y) - log q~_1(y) (naive: - log p(y))
                   exceeds it, in nats (see the module docstring for the default).
  debt_decay:      v3_balance: per-step decay of the movement left unbalanced.
  alignment_every: steps between computations of g_A for the logged cos(g, g_A) in modes
                   that do not need g_A (v1_update and v3_project compute it every step).
  """

  mode: str = _DEFAULT.mode
  lookahead: lookahead_lib.Lookahead | None = None
  contrast: str = _DEFAULT.contrast
  mixture: lookahead_lib.Mixture = lookahead_lib.Mixture()
  penalty: float = _DEFAULT.penalty
  distill: float = _DEFAULT.distill
  margin: float = _DEFAULT.margin
  debt_decay: float = _DEFAULT.debt_decay
  alignment_every: int = _DEFAULT.alignment_every

  @property
  def hooks(self) -> Mode:
    """The mode's hooks, MODES[mode]."""
    hooks = MODES[self.mode]
    if hooks is None:
      raise ValueError(f"stunting mode {self.mode!r} has no hooks: settings.validate resolves it "
                       "to its base mode")
    return hooks

  @property
  def needs_alignment_grad(self) -> bool:
    return self.hooks.needs_alignment_grad

  @property
  def uses_control(self) -> bool:
    return self.lookahead is not None and self.contrast == "control"


# ----------------------------------------------------------------------------- per token


def _at_tokens(log_p, amp: lookahead_lib.Amplified) -> Array:
  """log p at q's atoms [b, T, K]."""
  return jnp.take_along_axis(log_p, amp.tokens, axis=-1)


def token_terms(log_p, targets, amp: lookahead_lib.Amplified,
                control: lookahead_lib.Amplified | None, stunting: Stunting) -> dict[str, Array]:
  """Per-token quantities [b, T] of section 3, from log p [b, T, V] (pass it stop-gradient).

  amp: q_H; control: q_1 (None with contrast "naive"). Returns gain (log q~_H(y) minus
  log q~_1(y), naive: minus log p(y)), toward (bool, gain > stunting.margin), m
  (movement) and kl (KL(q_H || p)); all 0 / False where an anchor has no lookahead.
  """
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  mix = stunting.mixture
  mix_y = lookahead_lib.mix_at(amp, log_p, targets, mix.lam, mix.mixture)
  log_p_k = _at_tokens(log_p, amp)
  p_dot_q = amp.expect(jnp.exp(log_p_k))
  if control is None:  # naive: against p
    reference_y = log_p_y
    m = jnp.exp(amp.at(targets)) - jnp.exp(log_p_y) - p_dot_q + jnp.sum(
        jnp.exp(2.0 * log_p), axis=-1)
  else:  # against the horizon-1 control
    reference_y = lookahead_lib.mix_at(control, log_p, targets, mix.lam, mix.mixture)
    m = (jnp.exp(amp.at(targets)) - jnp.exp(control.at(targets)) - p_dot_q
         + control.expect(jnp.exp(_at_tokens(log_p, control))))
  kl = amp.expect(jnp.where(amp.log_q > -jnp.inf, amp.log_q - log_p_k, 0.0))
  gain = jnp.where(amp.valid, mix_y - reference_y, 0.0)
  return dict(gain=gain, toward=amp.valid & (gain > stunting.margin),
              m=jnp.where(amp.valid, m, 0.0), kl=jnp.where(amp.valid, kl, 0.0))


def _contrast_expect(log_p, amp, control, values_of) -> Array:
  """E_{q_H}[f] - E_{q_1}[f] (E_q[f] without a control) [b, T] for f = values_of(log_p at atoms)."""
  out = amp.expect(values_of(_at_tokens(log_p, amp)))
  if control is not None:
    out = out - control.expect(values_of(_at_tokens(log_p, control)))
  return jnp.where(amp.valid, out, 0.0)


def alignment(log_p, amp: lookahead_lib.Amplified,
              control: lookahead_lib.Amplified | None = None) -> Array:
  """sum_w d(w) log p(w) [b, T], d = q_H - q_1 (q without a control); differentiable in log_p."""
  return _contrast_expect(log_p, amp, control, lambda x: x)


def penalty(log_p, amp: lookahead_lib.Amplified,
            control: lookahead_lib.Amplified | None = None) -> Array:
  """sum_w d(w) p(w) [b, T], in [-1, 1] ([0, 1] without a control); differentiable (v2)."""
  return _contrast_expect(log_p, amp, control, jnp.exp)


def distill_kl(log_p, amp: lookahead_lib.Amplified, stunting: Stunting) -> Array:
  """KL(q~_H || p) [b, T], differentiable in log_p; the mixture q~_H is a fixed target."""
  target = jax.lax.stop_gradient(lookahead_lib.mix(
      log_p, amp.dense(log_p), stunting.mixture.lam, stunting.mixture.mixture))
  kl = jnp.sum(jnp.exp(target) * (target - log_p), axis=-1)
  return jnp.where(amp.valid, kl, 0.0)


def step_terms(logits: Array, ce: Array, found: lookahead_lib.Paths,
               batch: Mapping[str, Array], target: Array, key: Array, stunting: Stunting
               ) -> tuple[Array, Array | None, Array, dict[str, Array]]:
  """The stunting terms of a (micro-)batch's step, from its teacher-forced pass (logits,
  ce [b, T]) and the stunting lookahead's paths `found` (train.objectives calls it).

  The amplified targets q~_H, the horizon-1 control q~_1 (top-B of p, or N draws: no
  forward pass) when the contrast uses it, the per-token terms, the mode's token weights
  (`target`: v3_balance's movement for this micro-batch) and extra loss. Returns sums
  over the batch's weighted tokens, not yet normalised: (ce weighted by the mode's token
  weights, the mode's extra loss or None, the alignment A, aux: toward, marked,
  toward_marked, movement, kl, penalty, distill and the token weights' statistics).
  """
  sg, mix = jax.lax.stop_gradient, stunting.mixture
  targets, weights = batch["targets"], batch["weights"]
  log_p = jax.nn.log_softmax(logits)
  amp = lookahead_lib.amplify(found, mix.temperature, mix.scheme)
  control = None
  if stunting.uses_control:
    control = lookahead_lib.amplify(
        lookahead_lib.control_paths(sg(logits), found.valid, key, mix.beta,
                                    lookahead=stunting.lookahead), mix.temperature, mix.scheme)
  terms = token_terms(sg(log_p), targets, amp, control, stunting)
  token_weights, weight_stats = stunting.hooks.token_weights(terms, weights, target)
  penalty_sum = jnp.sum(penalty(log_p, amp, control) * weights)
  weighted = jnp.sum(ce * token_weights)
  extra, distill = stunting.hooks.extra_loss(log_p, amp, weights, penalty_sum, stunting)
  alignment_sum = jnp.sum(alignment(log_p, amp, control) * weights)
  marked = weights * batch.get("needs_lookahead", jnp.zeros_like(targets, bool))
  aux = dict(toward=jnp.sum(terms["toward"] * weights), marked=jnp.sum(marked),
             toward_marked=jnp.sum(terms["toward"] * marked),
             movement=jnp.sum(terms["m"] * weights), kl=jnp.sum(terms["kl"] * weights),
             penalty=sg(penalty_sum), distill=sg(distill), **weight_stats)
  return weighted, extra, alignment_sum, aux


def balance_weights(m, weights, target) -> tuple[Array, dict[str, Array]]:
  """v3_balance: token weights [b, T] with sum_i w_i m_i as close to `target` as the step
  allows, mean weight 1.

  m: movements [b, T]; weights: the batch weights [b, T] (0 = padding); target: [].
  Toward tokens (m > 0, weighted count n+, total movement P) get weight a, away tokens
  (m < 0, count n-, total |movement| N) get b, tokens with m = 0 keep 1:
    a P - b N = t   and   a n+ + b n- = n+ + n-   (mean weight 1),   a, b >= 0.
  With both sides present the movements t this reaches form the interval
  [-N (n+ + n-) / n-, P (n+ + n-) / n+] (its ends are a = 0 and b = 0); the target is
  clipped into it and met there; the part beyond reach is left to the caller (v3_balance
  carries it on in its debt). With one side empty the mean-weight
  constraint leaves a = b = 1: the step keeps its plain weights, realizes its own
  movement P or -N (0 with no moving token) and is not balanced.

  Returns (per-token weights times `weights`, statistics summed over the batch):
    balance_realized: sum_i w_i m_i, the movement realized;
    balance_target:   the target clipped into reach (the realized movement when one side
                      is empty);
    balanced_step:    1.0 when both sides are present, so the realized movement is the
                      clipped target, else 0.0;
    balance_clipped:  1.0 when the target was out of reach and clipped (both sides
                      present), else 0.0;
    balance_parts:    1.0 (summed over micro-batches: their number, by which the logged
                      shares divide).
  """
  up, down = (m > 0) * weights, (m < 0) * weights
  p_sum, n_sum = jnp.sum(up * m), -jnp.sum(down * m)
  n_up, n_down = jnp.sum(up), jnp.sum(down)
  count = n_up + n_down
  both = (p_sum > 0) & (n_sum > 0)
  highest = p_sum * count / jnp.maximum(n_up, 1e-30)  # b = 0
  lowest = -n_sum * count / jnp.maximum(n_down, 1e-30)  # a = 0
  reach = jnp.clip(target, lowest, highest)
  denom = jnp.where(both, n_sum * n_up + p_sum * n_down, 1.0)
  a = jnp.maximum((n_sum * count + reach * n_down) / denom, 0.0)
  b = jnp.maximum((p_sum * count - reach * n_up) / denom, 0.0)
  a, b = jnp.where(both, a, 1.0), jnp.where(both, b, 1.0)
  w = weights * jnp.where(m > 0, a, jnp.where(m < 0, b, 1.0))
  realized = jnp.sum(w * m)
  one, zero = jnp.ones(()), jnp.zeros(())
  return w, {"balance_realized": realized,
             "balance_target": jnp.where(both, reach, realized),
             "balanced_step": jnp.where(both, one, zero),
             "balance_clipped": jnp.where(both & (reach != target), one, zero),
             "balance_parts": one}


# ----------------------------------------------------------------------------- gradients


def project_out(tree, grads_a):
  """`tree` (v3_project: the optimizer's update) minus its component along grads_a;
  grads_a = 0 leaves it."""
  scale = optax.tree.vdot(tree, grads_a) / jnp.maximum(optax.tree.vdot(grads_a, grads_a), 1e-30)
  return optax.tree.add_scale(tree, -scale, grads_a)


def cosine(a, b) -> Array:
  """<a, b> / (|a| |b|) of two pytrees (0 when either is 0)."""
  return optax.tree.vdot(a, b) / jnp.maximum(optax.tree.norm(a) * optax.tree.norm(b), 1e-30)


# ----------------------------------------------------------------------------- modes


class Mode:
  """A stunting mode's hooks into the train step; this base changes nothing ("none").

  The hooks of lookahead modes are called with the step's stunting quantities (the
  token terms, the summed penalty, the optimizer's update u and g_A); `myopic` is read by
  every step.
  """

  lookahead: bool = False             # the mode has a stunting lookahead
  myopic: bool = False                # the forward pass reads stop-gradient keys/values
  needs_alignment_grad: bool = False  # g_A every step (not only every alignment_every)

  def token_weights(self, terms: Mapping[str, Array], weights: Array,
                    target: Array) -> tuple[Array, dict[str, Array]]:
    """(the per-token loss weights [b, T], statistics [] summed over micro-batches into the
    step's aux, which `edit_update` reads) from token_terms, the batch weights and the
    v3_balance target."""
    del terms, target
    return weights, {}

  def extra_loss(self, log_p: Array, amp: lookahead_lib.Amplified, weights: Array,
                 penalty: Array, stunting: Stunting) -> tuple[Array | None, Array]:
    """(the term added to the summed loss, None for none; the summed distill KL logged).

    penalty: sum_i w_i sum_w d_i(w) p_i(w), differentiable (computed in every lookahead mode).
    """
    del log_p, amp, weights, penalty, stunting
    return None, jnp.zeros(())

  def edit_update(self, updates: PyTree, grads_a: PyTree, cos: Array,
                  aux: Mapping[str, Array], debt: Array, stunting: Stunting
                  ) -> tuple[PyTree, Array, Array, dict[str, Array]]:
    """(the update to apply, skip, debt, metrics) from the update u the optimizer would
    apply (optax's `updates` for the step's gradient: the parameters move by u), the summed
    gradient g_A of A, cos(u, g_A), the summed statistics of `objectives` and the
    v3_balance debt. The optimizer state is the one `tx.update` returned for the raw
    gradient; a skipped step keeps the old one."""
    del grads_a, cos, aux, stunting
    return updates, jnp.zeros((), bool), debt, {}


class LookaheadMode(Mode):
  """A mode with a stunting lookahead whose other hooks change nothing (its statistics are
  logged; the base of the lookahead modes)."""

  lookahead = True


class V1Token(LookaheadMode):
  """Toward tokens get weight 0."""

  def token_weights(self, terms, weights, target):
    del target
    return weights * ~terms["toward"], {}


class V1Update(LookaheadMode):
  """The update is skipped when the update the optimizer would apply raises A to first
  order (<u, g_A> > 0, the sign of cos(u, g_A))."""

  needs_alignment_grad = True

  def edit_update(self, updates, grads_a, cos, aux, debt, stunting):
    del grads_a, aux, stunting
    return updates, cos > 0, debt, {}


class V2Penalty(LookaheadMode):
  """loss + penalty * the summed penalty / norm."""

  def extra_loss(self, log_p, amp, weights, penalty, stunting):
    del log_p, amp, weights
    return stunting.penalty * penalty, jnp.zeros(())


class V3Balance(LookaheadMode):
  """Balanced token weights (balance_weights); the movement left unbalanced, realized
  minus the target -debt, is carried on as a decaying debt:
  debt <- debt_decay * (debt + realized)."""

  def token_weights(self, terms, weights, target):
    return balance_weights(terms["m"], weights, target)

  def edit_update(self, updates, grads_a, cos, aux, debt, stunting):
    del grads_a, cos
    debt = stunting.debt_decay * (debt + aux["balance_realized"])
    parts = jnp.maximum(aux["balance_parts"], 1.0)
    return updates, jnp.zeros((), bool), debt, {
        "balance_debt": debt, "balanced_step": aux["balanced_step"] / parts,
        "balance_clipped": aux["balance_clipped"] / parts}


class V3Project(LookaheadMode):
  """The component along g_A of the update the optimizer would apply (weight decay
  included) is removed: u <- u - (<u, g_A> / |g_A|^2) g_A."""

  needs_alignment_grad = True

  def edit_update(self, updates, grads_a, cos, aux, debt, stunting):
    del cos, aux, stunting
    return project_out(updates, grads_a), jnp.zeros((), bool), debt, {}


class Distill(LookaheadMode):
  """loss + distill * the summed KL(q~_H || p) / norm."""

  def extra_loss(self, log_p, amp, weights, penalty, stunting):
    del penalty
    distill = jnp.sum(distill_kl(log_p, amp, stunting) * weights)
    return stunting.distill * distill, distill


class Myopic(Mode):
  """Stop-gradient keys/values in the forward pass; no lookahead."""

  myopic = True


# name -> hooks, in the order of the experiment configs' runs. v4 has none: settings.py
# resolves it to stunting.v4_base (with an SMC lookahead) before `Stunting` is built.
MODES: dict[str, Mode | None] = {
    "none": Mode(), "v1_token": V1Token(), "v1_update": V1Update(), "v2_penalty": V2Penalty(),
    "v3_balance": V3Balance(), "v3_project": V3Project(), "v4": None, "distill": Distill(),
    "myopic": Myopic()}
LOOKAHEAD_MODES = tuple(name for name, hooks in MODES.items()
                        if hooks is not None and hooks.lookahead)
