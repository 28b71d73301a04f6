"""Tables, plots and report files: the one place reports are written.

Every file goes through etils.epath, so a workdir can be a local path or a gs://
bucket. One table formatter (`table`, text or markdown), one matplotlib set-up
(`figure` / `save_figure`: matplotlib's Figure without pyplot, so no backend is chosen
and no global state is touched). The reports: the training summary, the
evaluation suite (table, plots, report.json), the stunting comparison (table, plots,
compare.json) and the generation report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from etils import epath
from matplotlib.figure import Figure

if TYPE_CHECKING:
  from lookahead_jax.settings import Settings

PARTS = ("all", "marked", "unmarked")  # tokens the testbed marks as needing lookahead


# ----------------------------------------------------------------------------- files


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` at `path` (local or gs://) whole or not at all: into a temporary file
  beside it, then renamed over it, so a killed process leaves no half-written file."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f".{path.name}.tmp"
  temporary.write_text(text)
  temporary.replace(path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=1) + "\n")


def figure(*subplots: int, size: tuple[float, float] = (6, 4), **kwargs: Any):
  """(fig, axes) of the report style: Figure.subplots(*subplots, **kwargs) at `size` inches."""
  fig = Figure(figsize=size)
  return fig, fig.subplots(*subplots, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> None:
  """Writes `fig` as a PNG at `path` (local or gs://)."""
  fig.tight_layout()
  epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  with epath.Path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=120)


# ----------------------------------------------------------------------------- tables


def cell(value: Any, fmt: str = "") -> str:
  """A value as table text: '-' for None or NaN, an interval [lo, hi] in the value's format."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(cell(v, fmt) for v in value) + "]"
  return format(value, fmt)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: str = "text",
          title: str = "") -> str:
  """Rows of cells (strings) under headers; "text" right-aligned columns or "markdown".

  Empty headers: a text table without a header line (name, value pairs).
  """
  if style == "markdown":
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
  body = [list(headers)] if any(headers) else []
  body += [list(r) for r in rows]
  widths = [max(len(r[i]) for r in body) for i in range(len(body[0]))]
  lines = [title, "-" * len(title)] if title and not any(headers) else [title] if title else []
  for r in body:
    if any(headers):
      lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    else:  # name, value: names left-aligned
      lines.append("  ".join([r[0].ljust(widths[0])] + r[1:]))
  return "\n".join(lines)


# ----------------------------------------------------------------------------- training summary


def summary_rows(summary: dict[str, Any], settings: Settings, workdir: str
                 ) -> list[tuple[str, str]]:
  """The (name, value) rows of a training summary (train._summary's figures)."""
  resumed_from, preempted, seconds = (summary["resumed_from"], summary["preempted"],
                                      summary["seconds"])
  counters, kept, monitored = summary["data"], summary["checkpoints"], summary["monitor"]
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  rows = [
      ("parameters", f"{summary['parameters']:,}"),
      ("steps", f"{summary['step']} of {summary['steps']}"
       + (f" (resumed from {resumed_from})" if resumed_from is not None else "")
       + (" (preempted)" if preempted else "")),
      ("train loss", f"{fmt(summary['first_train_loss'], '.4f')} (first log) -> "
                     f"{fmt(summary['train_loss'], '.4f')} (last log)"),
      ("val loss", f"{fmt(summary['val_loss'], '.4f')} (accuracy "
                   f"{fmt(summary['val_accuracy'], '.3f')})"),
      ("tokens/s", f"{fmt(summary['tokens_per_s'], ',.0f')} (median over logs, "
                   f"{settings.train.global_batch} x {settings.data.seq_len} tokens a step)"),
      ("step time", f"{fmt(summary['step_time'] and 1e3 * summary['step_time'], '.1f')} ms"),
      ("wall time", f"{seconds:.1f} s"),
      ("checkpoints", f"{', '.join(map(str, kept)) or '-'} in {workdir}/checkpoints"),
      ("non-finite", f"{summary['nonfinite_total']} steps skipped"),
      ("stunting", f"{settings.stunting_mode}"
                   + (f", {summary['skipped_total']} updates skipped" if summary["skipped_total"]
                      else "")
                   + (f", toward tokens {summary['toward']:.1%}" if summary["toward"] is not None
                      else "")
                   + "".join(f" ({name} {summary[key]:.1%})" for key, name in (
                       ("toward_marked", "marked"), ("toward_unmarked", "unmarked"))
                             if summary.get(key) is not None)
                   + (f", balanced steps {summary['balanced_step']:.1%}"
                      if summary.get("balanced_step") is not None else "")),
      ("data", ", ".join(f"{k} {v:,}" for k, v in counters.items())),
  ]
  if monitored and monitored.get("monitor_G_dev") is not None:
    marked = monitored.get("monitor_G_dev_marked") is not None
    part = "_marked" if marked else ""
    ci = cell([monitored.get(f"monitor_G_dev{part}_lo"), monitored.get(f"monitor_G_dev{part}_hi")],
              "+.4f")
    stunted = monitored.get("monitor_G_stunting" + part)
    width = monitored.get("monitor_control_width")
    rows.insert(-1, ("lookahead G", f"dev {monitored['monitor_G_dev' + part]:+.4f} {ci}"
                                    + (f", stunting {stunted:+.4f}" if stunted is not None
                                       else "")
                                    + f" nats/token on {'marked' if marked else 'all'} tokens "
                                    f"at step {monitored['step']} (G = gain(q_H) - gain(q_1) of "
                                    f"the dev lookahead {summary.get('dev_lookahead', '')}, on "
                                    f"{settings.monitor.batches} held-out batches; each "
                                    "side's tau and lam"
                                    + (f", and q_1's top-{int(width)}" if width else "")
                                    + f", fitted on {settings.monitor.fit_batches} other "
                                    "held-out batches)"))
  if monitored and "monitor_future_gain" in monitored:
    icl = monitored.get("monitor_icl_score")
    has = icl is not None and math.isfinite(icl)
    rows.insert(-1, ("probes", f"future-token gain {monitored['monitor_future_gain']:+.4f} "
                               "nats/token, "
                               + (f"ICL score (late - early loss) {icl:+.4f}, " if has else "")
                               + f"induction max {monitored['monitor_induction_max']:.3f} at "
                               f"step {monitored['step']} (the monitor's held-out batches; the "
                               "evaluation's probe table scores the test split)"
                               + ("" if has else f"; {NO_ICL}")))
  return rows


NO_ICL = ("no ICL score: no scored token of these rows falls in the late window of a row "
          "(probes.icl_positions)")


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


def summary_table(rows: Sequence[tuple[str, str]], title: str) -> str:
  """The training summary: name, value."""
  return table(("", ""), rows, title=title)


# ----------------------------------------------------------------------------- evaluation


def eval_table(report: dict[str, Any]) -> str:
  """The evaluation report, one line per (lookahead, scheme, mixture), G first."""
  naive = report["naive"]
  marked = (f"; marked {naive['test_nll_marked']:.4f}, unmarked {naive['test_nll_unmarked']:.4f}"
            if report["tokens"]["test_marked"] else "")
  title = (f"Lookahead evaluation of {report['params']} on {report['dataset']}: naive test NLL "
           f"{naive['test_nll']:.4f} (perplexity {naive['test_perplexity']:.3f}{marked}), "
           f"{report['tokens']['test']:.0f} test tokens in {report['tokens']['test_rows']} rows "
           f"({report['tokens']['test_marked']:.0f} marked as needing lookahead). G = gain(q_H) - "
           "gain(q_1), the lookahead-specific gain, in nats/token with paired 95% bootstrap "
           "intervals over test rows; each side's tau and lam fitted on the validation tokens "
           "of the part it reports (fit.py), q_1 the best horizon-1 sharpening of the family "
           f"({report['control_family']}); '*': a fitted value on its bound. g>0: the share of "
           "test tokens where q_H's mixture gives the target more probability than q_1's, "
           "whatever the size (so it can pass 1/2 while G < 0).")
  headers = ("kind", "B", "H", "scheme", "mixture", "G", "G 95%", "G marked", "G marked 95%",
             "gain q_H", "gain q_1", "tau,lam H", "k,tau,lam 1", "g>0", "val G")
  rows = []
  for r in report["rows"]:
    t = r["test"]
    rows.append((r["kind"], str(r["width"]), str(r["horizon"]), r["scheme"], r["mixture"],
                 cell(t["all"]["G"], "+.4f"), cell(t["all"]["G_ci"], "+.4f"),
                 cell(t["marked"]["G"], "+.4f"), cell(t["marked"]["G_ci"], "+.4f"),
                 cell(t["all"]["gain"], "+.4f"), cell(t["all"]["control"], "+.4f"),
                 f"{r['temperature']:.3g},{r['lam']:.4g}{'*' if r['on_bound'] else ''}",
                 f"{r['control_width']},{r['control_temperature']:.3g},"
                 f"{r['control_lam']:.4g}{'*' if r['control_on_bound'] else ''}",
                 cell(r["test_helps"], ".3f"), cell(r["validation_G"], "+.4f")))
  lines = [headline(report), title, table(headers, rows)]
  if report.get("monitor") and report["monitor"]["G"] is not None:
    m = report["monitor"]
    lines.append(f"The training summary's G ({m['G']:+.4f} {cell(m['G_ci'], '+.4f')} at step "
                 f"{m['step']}) is the dev lookahead's, {m['lookahead']}, on the monitor's "
                 f"held-out validation batches; this G is the headline lookahead's on the test "
                 "split. Different lookaheads on different tokens, so the two may differ.")
  return "\n".join(lines)


def headline(report: dict[str, Any]) -> str:
  """The evaluation in one sentence: G of the headline setting (the validation's best that
  looks ahead, H > 1) on the tokens that need lookahead (all tokens where the testbed marks
  none), its tau and lam beside its control's, and the gain of sharpening alone. Its
  verdict is that of G's interval, except where q_H's fitted lam sits on its bound 0: then
  q_H's mixture is p itself, and an interval of +-1e-7 nats says nothing either way."""
  b, test = report["best"], report["best"]["test"]
  part, where = (("marked", "on the tokens marked as needing lookahead")
                 if report["tokens"]["test_marked"] else ("all", "on all tokens"))
  other = (f" (all tokens {test['all']['G']:+.4f} {cell(test['all']['G_ci'], '+.4f')})"
           if part == "marked" else "")
  lo, hi = test[part]["G_ci"]
  verdict = ("No lookahead setting helps here: the best one's fitted lam is on its bound 0, "
             "so q_H mixes nothing into p and G is float noise" if "lam=0" in b["on_bound"] else
             "Looking ahead beats sharpening here" if lo > 0 else
             "Looking ahead does worse than sharpening here" if hi < 0 else
             "No lookahead setting beats its control here: the interval contains 0")
  h, c = _fit_text(b, ""), _fit_text(b, "control_")
  return (f"{verdict}. Lookahead-specific gain G {where}: {test[part]['G']:+.4f} "
          f"{cell(test[part]['G_ci'], '+.4f')} nats/token{other}, for the validation's best "
          f"setting that looks ahead, {b['kind']} B={b['width']} H={b['horizon']} "
          f"{b['scheme']} {b['mixture']} (q_H at {h}), against the best horizon-1 sharpening "
          f"q_1, top-{b['control_width']} of p at {c} (each fitted on validation). Beside it, "
          f"sharpening alone gains gain(q_1) {test[part]['control']:+.4f} and the lookahead "
          f"gain(q_H) {test[part]['gain']:+.4f}; per token, looking ahead beats sharpening on "
          f"{b['test_helps']:.1%} of {where[3:]} (the share with g > 0).")


def _fit_text(row: dict[str, Any], prefix: str) -> str:
  """ "tau 1.02, lam 0.97" of a row's side, naming any bound its fit sits on."""
  bound = row[f"{prefix}on_bound"]
  return (f"tau {row[prefix + 'temperature']:.3g}, lam {row[prefix + 'lam']:.4g}"
          + (f", on its bound {' and '.join(bound)}" if bound else ""))


GENERATION_COLUMNS = (("seq_rep_4", "seq-rep-4", ".3f"), ("rep_l", "rep-l", ".3f"),
                      ("distinct_1", "distinct-1", ".3f"), ("distinct_2", "distinct-2", ".3f"),
                      ("nll", "NLL/token", ".3f"), ("length", "tokens", ".1f"))


def generation_table(gen: dict[str, Any], style: str = "text") -> str:
  """Per sampler (and the held-out continuations): each figure with its 95% interval, and
  the testbed judge's (its judge_columns)."""
  rows = gen["rows"]
  cols = [c for c in (*GENERATION_COLUMNS, *map(tuple, gen.get("judge_columns", ())))
          if any(c[0] in r for r in rows.values())]
  body = []
  for sampler, r in rows.items():
    body.append([sampler] + [f"{cell(r[k]['mean'], f)} {cell(r[k]['ci'], f)}" if k in r else "-"
                             for k, _, f in cols]
                + [cell(r.get("tok_s"), ",.0f")])
  return table(["sampler"] + [h for _, h, _ in cols] + ["tok/s"], body, style,
               title=f"Generation on {gen['prompts']} held-out prompts of {gen['dataset']}, up "
               f"to {gen['new_tokens']} new tokens each (95% intervals over prompts)")


def write_generation(gen: dict[str, Any], out: str | os.PathLike) -> None:
  """report.json, table.md and seq_rep_vs_nll.png (seq-rep-4 against NLL per sampler)."""
  out = epath.Path(out)
  write_json(out / "report.json", gen)
  samples = "\n".join(f"- {s}: {t!r}" for s, texts in gen["samples"].items() for t in texts[:1])
  write_text(out / "table.md", generation_table(gen, "markdown") + "\n\nFirst prompt "
             f"{gen['prompt_texts'][0]!r}, its continuations:\n\n{samples}\n")
  fig, ax = figure(1, 1)
  for sampler, r in gen["rows"].items():
    x, y = r["nll"], r["seq_rep_4"]
    ax.errorbar([x["mean"]], [y["mean"]], xerr=[[x["mean"] - x["ci"][0]], [x["ci"][1] - x["mean"]]],
                yerr=[[y["mean"] - y["ci"][0]], [y["ci"][1] - y["mean"]]], fmt="o", capsize=3,
                label=sampler)
  ax.set_xlabel("the model's NLL per token of the continuation (nats)")
  ax.set_ylabel("seq-rep-4 (repeated 4-grams)")
  ax.legend()
  save_figure(fig, out / "seq_rep_vs_nll.png")


def _errorbars(ax, xs, points, style, label):
  """points: (value, [lo, hi]) per x."""
  values = np.array([p[0] for p in points])
  lo = values - np.array([p[1][0] for p in points])
  hi = np.array([p[1][1] for p in points]) - values
  ax.errorbar(xs, values, yerr=[lo, hi], fmt=style, capsize=3, label=label)


def eval_plots(report: dict[str, Any], token_g: np.ndarray, mark: np.ndarray,
               out: str | os.PathLike) -> None:
  """G_vs_horizon.png, G_vs_width.png (with intervals) and token_G_hist.png in `out`."""
  best = report["best"]
  part = "marked" if report["tokens"]["test_marked"] else "all"  # the headline's tokens
  chosen = [r for r in report["rows"]
            if (r["scheme"], r["mixture"]) == (best["scheme"], best["mixture"])]
  for x_key, line_key, name in (("horizon", "width", "G_vs_horizon"),
                                ("width", "horizon", "G_vs_width")):
    fig, ax = figure()
    for kind, style in (("beam", "-o"), ("smc", "--s"), ("mcts", ":^")):
      for value in sorted({r[line_key] for r in chosen if r["kind"] == kind}):
        pts = sorted((r[x_key], (r["test"][part]["G"], r["test"][part]["G_ci"]))
                     for r in chosen if r["kind"] == kind and r[line_key] == value)
        _errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], style,
                   f"{kind} {line_key[0].upper()}={value}")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(sorted({r[x_key] for r in chosen}))  # the grid's values, no fractions
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"test G on {part} tokens (nats/token)")
    ax.set_title(f"{report['dataset']}: {best['scheme']}, {best['mixture']}, 95% CI over rows",
                 fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, epath.Path(out) / f"{name}.png")
  fig, ax = figure()
  bins = np.linspace(np.percentile(token_g, 0.5), np.percentile(token_g, 99.5) + 1e-9, 60)
  mark = mark > 0  # mark groups (pipeline.mark_groups): 0 is unmarked
  if mark.any():
    ax.hist(token_g[~mark], bins=bins, alpha=0.6, label="other tokens", density=True)
    ax.hist(token_g[mark], bins=bins, alpha=0.6, label="needs lookahead", density=True)
    ax.legend()
  else:
    ax.hist(token_g, bins=bins, density=True)
  ax.axvline(0.0, color="gray", lw=0.8)
  ax.set_xlabel("per-token g = log p~_H - log p~_1 (nats)")
  ax.set_ylabel("density")
  ax.set_title(f"best: {best['kind']} B={best['width']} H={best['horizon']}, test split")
  save_figure(fig, epath.Path(out) / "token_G_hist.png")


def probes_table(probes: dict[str, Any]) -> str:
  """The probes of the evaluation: future-token probes per features and offset, the
  marked-token probe (path_star), the logit lens, the ICL and induction scores."""
  f = probes["figures"]
  names = ["emb"] + [f"L{layer}" for layer in probes["layers"]]
  headers = ["features"] + [f"k={k} NLL / acc" for k in probes["offsets"]]
  if "marked_nll" in probes:
    headers.append("at the marks NLL / acc")
  rows = []
  for i, name in enumerate(names):
    row = [("token embedding (floor)" if i == 0 else f"layer {name[1:]}")]
    row += [f"{probes['future_nll'][i][j]:.3f} / {probes['future_accuracy'][i][j]:.3f}"
            for j in range(len(probes["offsets"]))]
    if "marked_nll" in probes:
      row.append(f"{probes['marked_nll'][i]:.3f} / {probes['marked_accuracy'][i]:.3f}")
    rows.append(row)
  gains = ", ".join(f"k={k} {f[f'future_gain_k{k}']:+.4f}" for k in probes["offsets"])
  lens = ", ".join(f"{'emb' if i == 0 else f'L{i}'} {x:.3f}"
                   for i, x in enumerate(probes["lens_nll"]))
  title = (f"Probes: linear probes of x_(t+k) fit on {probes['splits'][0]}, scored on "
           f"{probes['splits'][1]} ({probes['rows']} rows each, {probes['score_tokens']:.0f} "
           "scored tokens)" + ("; at the marks: the probe at the marked tokens' inputs "
                               "(path_star: before the first step, for the first step)"
                               if "marked_nll" in probes else ""))
  lines = [title, table(headers, rows),
           f"future-token gain over the floor (best layer, nats/token): {gains}; mean "
           f"{f['future_gain']:+.4f}",
           f"logit lens NLL by layer: {lens}",
           (f"ICL score (late - early loss) on {probes['splits'][1]}: "
            f"{f['icl_score']:+.4f} (early {f['icl_early']:.3f}, late {f['icl_late']:.3f})"
            if _finite(f["icl_score"]) else NO_ICL),
           f"induction (prefix-matching) score, best head: {f['induction_max']:.3f}"]
  return "\n".join(lines)


def probe_plots(probes: dict[str, Any], dataset: str, out: str | os.PathLike) -> None:
  """probes.png: future-token probe NLL by offset, logit lens by layer, induction map."""
  fig, axes = figure(1, 3, size=(13, 4))
  names = ["token embedding"] + [f"layer {layer}" for layer in probes["layers"]]
  for name, nll in zip(names, probes["future_nll"]):
    axes[0].plot(probes["offsets"], nll, "--s" if name == names[0] else "-o", label=name)
  axes[0].set_xticks(probes["offsets"])
  axes[0].set_xlabel("offset k (probe of x_(t+k))")
  axes[0].set_ylabel("probe NLL on the score split (nats)")
  axes[0].set_title("future-token probes", fontsize=10)
  axes[0].legend(fontsize=8)
  layers = np.arange(len(probes["lens_nll"]))
  axes[1].plot(layers, probes["lens_nll"], "-o")
  axes[1].set_xticks(layers, ["emb"] + [str(i) for i in layers[1:]])
  axes[1].set_xlabel("layer")
  axes[1].set_ylabel("next-token NLL (nats)")
  axes[1].set_title("logit lens", fontsize=10)
  scores = np.asarray(probes["induction"])
  # The colour scale ends at the largest score (often far below 1 in a small model).
  image = axes[2].imshow(scores, vmin=0.0, vmax=max(float(scores.max()), 1e-6), cmap="viridis",
                         aspect="auto")
  axes[2].set_yticks(np.arange(scores.shape[0]), [str(i + 1) for i in range(scores.shape[0])])
  axes[2].set_xlabel("head")
  axes[2].set_ylabel("layer")
  axes[2].set_title("induction (prefix-matching) score", fontsize=10)
  fig.colorbar(image, ax=axes[2])
  fig.suptitle(f"Probes on {dataset}")
  save_figure(fig, epath.Path(out) / "probes.png")


# ----------------------------------------------------------------------------- comparison

# The printed comparison's columns (compare.columns_of's keys) on a testbed whose evaluator
# names none (evals: Evaluator.headline); compare.md and compare.csv hold every column.
HEADLINE = ("mode", "seeds", "version", "test_nll", "pll_nll", "readout_nll", "G_stunting",
            "G_dev", "G_stunting_marked", "G_dev_marked", "test_nll_vs_baseline",
            "G_stunting_vs_baseline", "G_dev_marked_vs_baseline", "toward", "balanced", "cost")


def compare_plots(rows: list[dict[str, Any]], trajectories: dict[str, dict[str, list]],
                  dataset: str, out: str | os.PathLike) -> None:
  """compare.png (NLL, G all and marked with intervals, cost) and G_trajectory.png."""
  names = [r["mode"] for r in rows]
  x = np.arange(len(rows))
  fig, axes = figure(2, 2, size=(11, 7))
  panels = ((axes[0, 0], ["test_nll"], "naive test NLL (nats/token)"),
            (axes[0, 1], ["G_stunting", "G_dev"], "G, all tokens"),
            (axes[1, 0], ["G_stunting_marked", "G_dev_marked"], "G, needs-lookahead tokens"),
            (axes[1, 1], ["cost"], "step time / baseline"))
  for ax, keys, title in panels:
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
      values = np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], float)
      cis = [r.get(key + "_ci") for r in rows]
      err = None
      if all(c is not None for c in cis):
        err = [values - [c[0] for c in cis], [c[1] for c in cis] - values]
      ax.bar(x + i * width, values, width, yerr=err, capsize=3, label=key.replace("_", " "))
    ax.set_xticks(x + 0.4 - width / 2, names, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.axhline(0.0, color="gray", lw=0.8)
    if len(keys) > 1:
      ax.legend(fontsize=8)
  fig.suptitle(f"Stunting comparison on {dataset} (95% intervals)")
  save_figure(fig, epath.Path(out) / "compare.png")

  trajectory_plot(trajectories, out)


def has_series(trajectories: dict[str, dict[str, list]], key: str) -> bool:
  """Whether any run's trajectory has a value for `key`."""
  return any(v is not None for series in trajectories.values() for v in series.get(key, []))


def _plot_series(ax, trajectories: dict[str, dict[str, list]], key: str, ylabel: str,
                 title: str) -> None:
  """One line per run name of trajectories[name][key] over "step", with its 95% band:
  over seeds where the series has one (key + "_ci", [lo, hi] per step: compare's mean of
  several runs), else the monitor's own interval over held-out rows (key + "_lo",
  key + "_hi": one run). A step without a value is a gap."""
  for name, series in trajectories.items():
    if not series.get("step"):
      continue
    steps = np.asarray(series["step"])
    floats = lambda xs: np.array([np.nan if v is None else v for v in xs], float)
    values = floats(series.get(key) or [None] * len(steps))
    (line,) = ax.plot(steps, values, "-o", ms=3, label=name)
    cis = series.get(key + "_ci") or []
    if any(c is not None for c in cis):
      lo, hi = (np.array([np.nan if c is None else c[i] for c in cis], float) for i in (0, 1))
    else:
      lo, hi = (floats(series.get(f"{key}_{end}") or [None] * len(steps))
                for end in ("lo", "hi"))
    if np.isfinite(lo).any() and np.isfinite(hi).any():
      ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
  ax.axhline(0.0, color="gray", lw=0.8)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  if ax.get_legend_handles_labels()[0]:  # runs without monitoring have no trajectory
    ax.legend(fontsize=7)


def trajectory_plot(trajectories: dict[str, dict[str, list]], out: str | os.PathLike) -> None:
  """G_trajectory.png in `out`: G of the dev lookahead over training (marked tokens, all
  tokens), one line per run name with its 95% band (over seeds for several runs, over
  held-out rows for one: `_plot_series`); accuracy_trajectory.png, the teacher-forced
  accuracy and G of every mark group (path_star: goal depths), when the monitor split by
  groups; and probe_trajectory.png, the future-token probe gain over training, when the
  probes ran. G is the monitor's: each side's tau and lam fitted on other held-out
  batches than those it is reported on (monitor.py)."""
  fig, axes = figure(1, 2, size=(11, 4))
  for ax, key, title in ((axes[0], "G_dev_marked", "needs-lookahead tokens"),
                         (axes[1], "G_dev", "all tokens")):
    _plot_series(ax, trajectories, key, "G on held-out batches (nats/token)",
                 f"G of the dev lookahead over training, {title} (95%)")
  save_figure(fig, epath.Path(out) / "G_trajectory.png")
  prefix = "accuracy_marked_"
  groups = sorted({int(k[len(prefix):]) for series in trajectories.values() for k in series
                   if k.startswith(prefix) and k[len(prefix):].isdigit()})
  groups = [g for g in groups if has_series(trajectories, f"accuracy_marked_{g}")]
  if groups:
    fig, axes = figure(len(groups), 2, size=(11, 4 * len(groups)), squeeze=False)
    for row, g in zip(axes, groups):
      _plot_series(row[0], trajectories, f"accuracy_marked_{g}", "teacher-forced accuracy",
                   f"marked tokens of group {g} (path_star: goal depth {g}): accuracy")
      _plot_series(row[1], trajectories, f"G_dev_marked_{g}", "G (nats/token)",
                   f"group {g}: G of the dev lookahead")
    save_figure(fig, epath.Path(out) / "accuracy_trajectory.png")
  if has_series(trajectories, "future_gain"):
    fig, ax = figure()
    _plot_series(ax, trajectories, "future_gain", "probe gain (nats/token)",
                 "future-token probe gain over the embedding's, held-out batches")
    save_figure(fig, epath.Path(out) / "probe_trajectory.png")
