"""Generation by editing with a masked model: the prompt is kept, the GA's best fitness
never falls (editing.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import editing
from lookahead_jax import model as model_lib

MASK = 15  # the tiny model's last id (tokens are drawn from 2..14)


EDITOR = editing.Editor(config=model_lib.Config(vocab_size=16, max_len=32, num_layers=2,
                                                d_model=32, num_heads=4),
                       mask_id=MASK, vocab=MASK, banned=(0, 1))


PROMPT = np.array([1, 5, 9, 4, 7], np.int32)


def test_editing_never_changes_a_prompt_token(tiny_params):
  for method, kwargs in ((editing.edit, {}), (editing.genetic, dict(population=8))):
    text, history = method(tiny_params, PROMPT, 9, jax.random.key(1), editor=EDITOR, log=None,
                           rounds=3, span=2, **kwargs)
    assert text.shape == (14,) and len(history) == 4
    np.testing.assert_array_equal(text[:5], PROMPT)
    assert set(text[5:].tolist()) <= set(range(2, MASK))  # no pad, EOD or [MASK] drawn


def test_the_ga_best_fitness_never_decreases_between_rounds(tiny_params):
  text, history = editing.genetic(tiny_params, PROMPT, 9, jax.random.key(0), editor=EDITOR,
                                 rounds=8, population=8, span=2, log=None)
  assert all(b >= a for a, b in zip(history, history[1:]))
  assert history[-1] > history[0]  # the search found something better than its start
  np.testing.assert_allclose(editing.plausibility(tiny_params, jnp.asarray(text)[None], EDITOR),
                             history[-1], atol=1e-5)
