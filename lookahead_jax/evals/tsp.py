"""The tsp evaluator: tours decoded by the model (greedy, beam) against nearest neighbour.

On the first `eval.tsp_instances` instances of the test split: the prompt is a document's
start, [EOD] + coordinates + separator, and the next n tokens are read as the tour. Per
city count n and method: the share of valid tours, the mean optimality gap of the valid
ones, and the share that is optimal.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from lookahead_jax import decoding, report
from lookahead_jax.config import Settings
from lookahead_jax.data import builders, tsp

NAME = tsp.NAME
METHODS = ("greedy", "beam", "nearest_neighbour")
# compare's columns: (key, header, format)
COLUMNS = (("tsp_greedy_gap", "tsp greedy gap", ".3f"), ("tsp_beam_gap", "tsp beam gap", ".3f"))


def evaluate(params, config: ConfigDict, settings: Settings, headline: dict[str, Any] | None
             ) -> dict[str, Any]:
  """{method: {n: {valid, gap, optimal, instances}}} for greedy, beam (the widest of
  eval.widths) and nearest_neighbour (no model). `headline` is not used."""
  del headline
  ev, tok, model_cfg = config.eval, settings.tokenizer, settings.model
  records = builders.data_source(NAME, ev.test_split, config.data.data_dir,
                                 **config.data.options.to_dict())
  by_size: dict[int, list[dict[str, Any]]] = {}
  for i in range(min(ev.tsp_instances, len(records))):
    by_size.setdefault(int(records[i]["num_cities"]), []).append(records[i])
  out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in METHODS}
  for n, group in sorted(by_size.items()):
    prompts = jnp.asarray([[tok.eod_id] + tok.encode_instance(r["coords"]) for r in group])
    greedy = decoding.generate(params, prompts, jax.random.key(0), config=model_cfg,
                               max_new_tokens=n)
    beams = decoding.beam_search(params, prompts, config=model_cfg, beam_size=max(ev.widths),
                                 max_new_tokens=n)
    tours = {"greedy": [tok.decode_tour(t) for t in np.asarray(greedy)],
             "beam": [tok.decode_tour(t) for t in np.asarray(beams.sequences[:, 0])],
             "nearest_neighbour": [tsp.greedy_tour(r["coords"]) for r in group]}
    for method, found in tours.items():
      valid = [t is not None and tsp.is_valid_tour(t, n) for t in found]
      gaps = [tsp.optimality_gap(r["coords"], t, r["tour"])
              for r, t, ok in zip(group, found, valid) if ok]
      out[method][n] = dict(instances=len(group), valid=float(np.mean(valid)),
                            gap=float(np.mean(gaps)) if gaps else float("nan"),
                            optimal=float(np.mean([g == 0.0 for g in gaps])) if gaps else 0.0)
  return out


def table(tours: dict[str, Any], headline: dict[str, Any] | None = None) -> str:
  """Tour validity, mean gap of valid tours and optimal fraction per city count and method."""
  del headline
  headers = ["cities"] + [f"{m} valid/gap/opt" for m in tours]
  rows = [[str(n)] + [f"{t[n]['valid']:.2f} {t[n]['gap']:.3f} {t[n]['optimal']:.2f}"
                      for t in tours.values()] for n in sorted(next(iter(tours.values())))]
  return report.table(headers, rows, title="TSP tours on the test split: valid fraction, "
                      "mean optimality gap of valid tours, optimal fraction")


def _mean_gap(tours: dict[str, Any], method: str) -> float | None:
  """Mean optimality gap of a decoding method over the city counts (valid tours only)."""
  levels = tours.get(method)
  if not levels:
    return None
  gaps = [(row["gap"], row["instances"] * row["valid"]) for row in levels.values()
          if row["valid"] > 0]
  weight = sum(w for _, w in gaps)
  return sum(g * w for g, w in gaps) / weight if weight else float("nan")


def columns(tours: dict[str, Any], best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """compare's figures of a run: the mean gap of greedy and beam tours."""
  del best_rows
  return {"tsp_greedy_gap": _mean_gap(tours, "greedy"), "tsp_beam_gap": _mean_gap(tours, "beam")}
