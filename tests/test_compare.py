"""The stunting comparison runner and the experiment configs."""

import csv
import io
import json
import os

import numpy as np
import pytest
from etils import epath

from lookahead_jax import compare, stats, stunting
from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.config import ConfigError
from lookahead_jax.data import tokenizers
from lookahead_jax.evals import path_star as ps_eval

from conftest import REPO, RHYME_TEST_OPTIONS

# The stunting experiments: one config per testbed, each defining a run per mode.
# (gpt2_amplify.py is an evaluation, not a stunting comparison.)
EXPERIMENTS = [os.path.join(REPO, "configs", "experiments", f"{name}.py")
               for name in ("rhyme", "article", "tsp", "path_star", "tiny_shakespeare")]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_config_has_every_mode(path):
  runs = compare.load(path)
  assert [name for name, _ in runs] == list(stunting.MODES)
  for mode, config in runs:
    assert config.stunting.mode == mode and config.monitor.every > 0
    assert config.model.max_len >= config.data.seq_len + config.lookahead.horizon
    assert config.is_locked  # built on the schema: nothing unknown
  # A run is named by the argument after the colon.
  assert compare.load(path + ":v1_token")[0][0] == "v1_token"


def test_experiment_configs_import_only_the_config_module():
  for path in EXPERIMENTS:
    with open(path, encoding="utf-8") as f:
      imports = [line for line in f if line.startswith(("import", "from"))]
    assert imports == ["from lookahead_jax import config as config_lib\n"], (path, imports)


SETS = ["data.tokenizer=''", "model.vocab_size=258", "data.seq_len=32", "model.num_layers=1",
        "model.d_model=32", "lookahead.width=2", "train.steps=4", "train.warmup_steps=1",
        "train.log_every=2", "train.checkpoint_every=0", "eval.max_batches=1",
        "eval.batch_size=8", "eval.schemes=('sum',)", "eval.mixtures=('linear',)",
        "monitor.dev_width=2", "eval.bootstrap=200",
        "monitor.every=4",  # once, at the last step: the trajectory's one point
        ] + [
            f"data.options.{k}={v}" for k, v in RHYME_TEST_OPTIONS.items()]


def test_compare_writes_one_table_and_plots_with_seeds(rhyme_data_dir, tmp_path, capsys,
                                                        monkeypatch):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py")
  sets = [f"data.data_dir='{rhyme_data_dir}'", *SETS]
  rows = compare.run(f"{spec}:none,{spec}:v1_token", str(tmp_path), sets, seeds=2)
  assert [r["mode"] for r in rows] == ["none", "v1_token"]
  assert all(r["seeds"] == 2 for r in rows)
  for mode in ("none", "v1_token"):  # one workdir per mode and seed
    assert sorted(os.listdir(tmp_path / mode)) == ["seed_0", "seed_1"]
  # cost: step time over the baseline's, paired by seed (bench/train.py times it properly)
  assert rows[0]["cost"] == 1.0 and rows[1]["cost"] > 0
  assert rows[0].get("toward") is None and 0 <= rows[1]["toward"] <= 1
  assert rows[0]["G_stunting_vs_baseline"] == 0.0
  for key in ("test_nll", "G_stunting", "G_dev", "G_stunting_marked", "gain_stunting"):
    for r in rows:  # mean and t-interval over the seeds
      lo, hi = r[key + "_ci"]
      assert isinstance(r[key], float) and lo <= r[key] <= hi and len(r[key + "_per_seed"]) == 2
  # The files go through etils.epath (local or gs://); read them back the same way.
  saved = json.loads((epath.Path(tmp_path) / "compare.json").read_text())
  assert saved["rows"] == rows and saved["seeds"] == 2
  trajectory = saved["trajectories"]["v1_token"]  # G over training, from the monitor
  assert trajectory["step"] and len(trajectory["G_dev_marked_ci"]) == len(trajectory["step"])
  # The probes beside G: the evaluation's figures over seeds, the monitor's over training.
  for key in ("future_gain", "icl_score", "induction_max"):
    for r in rows:
      assert len(r[key + "_per_seed"]) == 2 and r[key + "_ci"][0] <= r[key] <= r[key + "_ci"][1]
  assert len(saved["trajectories"]["none"]["future_gain"]) == len(
      saved["trajectories"]["none"]["step"])
  for name in ("compare.png", "G_trajectory.png", "probe_trajectory.png"):
    assert (epath.Path(tmp_path) / name).read_bytes()[:4] == b"\x89PNG"
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  assert "| v1_token | 2 |" in table and "G (stunting la.)" in table
  assert "future-token probe gain" in table
  assert table.split("Every figure:")[0].strip() in capsys.readouterr().out  # as printed

  # A run with its figures is neither trained nor evaluated again (records: below) ...
  evaluated, evaluate_run = [], compare.evaluate.run

  def counted(settings, workdir, **kwargs):
    evaluated.append(os.path.basename(workdir))
    return evaluate_run(settings, workdir, **kwargs)

  monkeypatch.setattr(compare.evaluate, "run", counted)
  first, first_toward = rows[0], rows[1]["toward_per_seed"][0]
  assert compare.run(f"{spec}:none", str(tmp_path), sets, seeds=2)[0][
      "test_nll_per_seed"] == first["test_nll_per_seed"] and evaluated == []
  # A run whose config changed is evaluated again (here: a different bootstrap).
  compare.run(f"{spec}:none", str(tmp_path), [*sets, "eval.bootstrap=100"], seeds=1)
  assert evaluated == ["seed_0"]
  # A finished run evaluated again, not trained, keeps its training figures (from its log).
  (tmp_path / "v1_token" / "seed_0" / compare.RUN_FILE).unlink()
  again = compare.run(f"{spec}:v1_token", str(tmp_path), sets, seeds=1)
  assert evaluated[-1] == "seed_0" and again[0]["toward"] == first_toward


def test_bad_assignments_are_one_line_errors(tmp_path):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py:none")
  with pytest.raises(ConfigError, match="write --config.KEY=VALUE"):
    compare.run(spec, str(tmp_path), ["train.steps"])
  with pytest.raises(ConfigError, match="no config file"):
    compare.run("configs/experiments/nope.py", str(tmp_path))
  with pytest.raises(ConfigError, match="--seeds=0: give at least 1"):
    compare.run(spec, str(tmp_path), seeds=0)


MASKED = os.path.join(REPO, "configs", "experiments", "masked_rho.py")


def test_a_renamed_key_in_a_config_file_is_one_line(tmp_path):
  path = tmp_path / "old.py"
  path.write_text("from lookahead_jax import config as config_lib\n\n"
                  "def get_config(arg=None):\n"
                  "  config = config_lib.base_config()\n"
                  "  config.stunting.dev_width = 4\n"
                  "  return config\n")
  with pytest.raises(ConfigError, match=r"^stunting.dev_width is now monitor.dev_width: "):
    compare.load(f"{path}:none")
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py:none")
  with pytest.raises(ConfigError, match=r"^eval.tsp_instances is now eval.task_instances: "):
    compare.run(spec, str(tmp_path), ["eval.tsp_instances=5"])


def test_the_masked_experiment_config_runs_the_rho_spectrum_without_stunting():
  runs = compare.load(MASKED)
  assert [(name, c.objective.rho) for name, c in runs] == [
      ("rho_1", 1.0), ("rho_0.5", 0.5), ("rho_0.1", 0.1)]
  assert compare.load(MASKED + ":bert")[0][1].objective.rho == 0.0
  for _, config in runs:
    assert config.objective.kind == "spectrum" and config.stunting.mode == "none"
    assert config.model.vocab_size == 385  # 384 SentencePiece pieces and [MASK]
  with open(MASKED, encoding="utf-8") as f:
    assert [line for line in f if line.startswith(("import", "from"))] == [
        "from lookahead_jax import config as config_lib\n"]



# ----------------------------------------------------------------- tables of synthetic runs
# (no training: figures as run_one returns them, tabulated into a tmp dir)

VERSION = {"commit": "a" * 40, "dirty": False, "diff": None, "short": "a" * 7}
OTHER_VERSION = {"commit": "b" * 40, "dirty": True, "diff": "1234abcd5678", "short": "bbbbbbb+1234"}


def _figures(seed, version=VERSION, **extra):
  """One run's figures, as run_one returns them."""
  evaluated = {k: v for k, v in version.items() if k != "earlier"}
  return {"seed": seed, "test_nll": 1.0 + 0.01 * seed, "step_time": 0.1, "toward": None,
          "skipped": 0.0, "test_rows": 100, "version": {"train": version, "eval": evaluated},
          "trajectory": {"step": [10, 20], "G_dev_marked": [0.1, 0.05], "G_dev": [0.2, 0.1]},
          "G_stunting": 0.1 + 0.01 * seed, "G_stunting_ci": [0.0, 0.2], **extra}


def test_every_interval_states_its_n_and_a_figure_missing_in_a_seed_shows(tmp_path, capsys):
  results = {"none": [_figures(0, G_dev=0.2), _figures(1, G_dev=0.3), _figures(2, G_dev=None)],
             "v1_token": [_figures(0, G_dev=0.1)]}
  rows = compare.tabulate(results, str(tmp_path), "rhyme")
  none, one = rows
  assert none["seeds"] == 3  # every run counts ...
  assert none["G_dev_n"] == "2 of 3 seeds"  # ... and the interval says it stands on two
  assert none["G_dev_per_seed"] == [0.2, 0.3, None]
  lo, hi = none["G_dev_ci"]
  assert none["G_dev"] == pytest.approx(0.25) and lo < 0.25 < hi
  assert none["test_nll_n"] == "3 seeds" and none["G_stunting_vs_baseline_n"] == "3 seeds"
  # One seed: the evaluation's bootstrap over test rows, and it says so.
  assert one["G_stunting_ci"] == [0.0, 0.2] and one["G_stunting_n"] == "100 rows"
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  assert "n=2 of 3 seeds" in table and "n=3 seeds" in table and "n=100 rows" in table
  for line in table.splitlines()[4:]:  # every interval cell carries its n
    for cell in line.split("|"):
      assert "]" not in cell or " n=" in cell, cell
  assert "WARNING" not in capsys.readouterr().out  # one code version


def test_the_printed_table_holds_the_headline_columns_and_the_files_every_figure(
    tmp_path, capsys):
  results = {"none": [_figures(0, G_dev=0.2, gain_stunting=0.3), _figures(1, G_dev=0.3)],
             "v3_balance": [_figures(0, G_dev=0.1, balanced=0.25)]}
  rows = compare.tabulate(results, str(tmp_path), "rhyme")
  printed = capsys.readouterr().out
  header = next(line for line in printed.splitlines() if line.startswith("| mode"))
  shown = [h.strip() for h in header.strip("|").split("|")]
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  headline, every = table.split("Every figure:")
  assert header in headline
  full = next(line for line in every.splitlines() if line.startswith("| mode"))
  heads = {c.key: c.header for c in compare.columns_of(compare.evals.build(
      compare.config_lib.defaults("eval").evaluators), rows)}
  wanted = {heads[k] for k in compare.report.HEADLINE if k in heads}
  assert shown == [h.strip() for h in full.strip("|").split("|") if h.strip() in wanted]
  assert {"test NLL", "G (dev la.)", "balanced steps", "code version"} <= set(shown)
  assert "gain q_H (stunting)" not in shown and "gain q_H (stunting)" in full  # files hold it
  for mode in ("none", "v3_balance"):  # each mode's line below the table
    assert f"\n- {mode}: {config_lib.STUNTING_MODES[mode]}" in printed
  lines = list(csv.DictReader(io.StringIO((epath.Path(tmp_path) / "compare.csv").read_text())))
  assert [line["mode"] for line in lines] == ["none", "v3_balance"]
  none, balanced = lines
  assert float(none["G_dev"]) == pytest.approx(rows[0]["G_dev"])
  assert [float(none["G_dev_lo"]), float(none["G_dev_hi"])] == pytest.approx(rows[0]["G_dev_ci"])
  assert none["G_dev_n"] == "2 seeds" and balanced["G_dev_lo"] == ""  # one seed: no interval
  assert float(balanced["balanced"]) == 0.25 and none["balanced"] == ""


def test_runs_of_different_code_versions_are_marked_and_warned_about(tmp_path, capsys):
  results = {"none": [_figures(0)], "v1_token": [_figures(0, OTHER_VERSION)],
             "v3_balance": [_figures(0, {**VERSION, "earlier": [OTHER_VERSION]})]}
  rows = compare.tabulate(results, str(tmp_path), "rhyme")
  # v3_balance: trained partly under each version (resumed), evaluated under the last
  assert [r["version"] for r in rows] == ["aaaaaaa", "bbbbbbb+1234", "bbbbbbb+1234/aaaaaaa"]
  out = capsys.readouterr().out
  assert "WARNING: figures from different code versions meet in this table" in out
  assert "v1_token bbbbbbb+1234" in out
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  assert "WARNING" in table and "| none | 1 | aaaaaaa |" in table
  saved = json.loads((epath.Path(tmp_path) / "compare.json").read_text())
  assert saved["version_warning"]
  # A run whose version was never recorded is not taken for the others' version.
  results = {"none": [_figures(0)], "v1_token": [_figures(0)]}
  results["v1_token"][0]["version"]["train"] = None
  rows = compare.tabulate(results, str(tmp_path), "rhyme")
  assert rows[1]["version"] == "? (eval aaaaaaa)" and "WARNING" in capsys.readouterr().out


PATH_STAR = os.path.join(REPO, "configs", "experiments", "path_star.py")


def test_a_record_round_trips_with_what_made_it(tmp_path):
  config = compare.load(PATH_STAR + ":none")[0][1]
  workdir, record = tmp_path / "run", tmp_path / "results" / "none" / "seed_0"
  for name in compare.RECORD_FILES:  # what the run left in its workdir
    (workdir / name).parent.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(f"{name}\n")
  (workdir / "checkpoints").mkdir()
  figures = _figures(0, G_dev=float("nan"), per_graph={"depth": [2, 3], "g": [0.1, None]})
  compare.write_record(config_lib.resolved(config), str(workdir), str(record), figures)
  assert (compare.read_record(config_lib.resolved(config), str(record))
          == json.loads(json.dumps(figures)))
  assert sorted(os.listdir(record)) == sorted(  # no temporary files left, no checkpoints
      [compare.RUN_FILE, "eval", *[n for n in compare.RECORD_FILES if "/" not in n]])
  assert (record / "eval" / "report.json").read_text() == "eval/report.json\n"
  # Matched on the config, less where the data is cached; another config has no record.
  config.data.data_dir = "/elsewhere"
  assert compare.read_record(config_lib.resolved(config), str(record)) is not None
  # A key added to the code after the record was made matches at its default only.
  saved = json.loads((record / compare.RUN_FILE).read_text())
  del saved["config"]["lookahead"]["policy"]
  (record / compare.RUN_FILE).write_text(json.dumps(saved))
  assert compare.read_record(config_lib.resolved(config), str(record)) is not None
  config.lookahead.policy = "visits"
  assert compare.read_record(config_lib.resolved(config), str(record)) is None
  config.lookahead.policy = compare.config_lib.base_config().lookahead.policy
  # A record made before keys were renamed is read under their new names, left as it is.
  saved = json.loads((record / compare.RUN_FILE).read_text())
  for old, new in compare.config_lib.RENAMED.items():
    (section, key), (new_section, new_key) = old.split("."), new.split(".")
    saved["config"][section][key] = saved["config"][new_section].pop(new_key)
  del saved["config"]["monitor"]
  old_record = json.dumps(saved)
  (record / compare.RUN_FILE).write_text(old_record)
  assert compare.read_record(config_lib.resolved(config), str(record)) is not None
  assert (record / compare.RUN_FILE).read_text() == old_record
  config.monitor.dev_width += 1
  assert compare.read_record(config_lib.resolved(config), str(record)) is None
  config.monitor.dev_width -= 1
  config.train.steps += 1
  assert compare.read_record(config_lib.resolved(config), str(record)) is None
  assert compare.read_record(config_lib.resolved(config), str(tmp_path / "none")) is None


def test_a_preempted_run_is_neither_evaluated_nor_recorded(tmp_path, monkeypatch):
  config = compare.load(PATH_STAR + ":v3_balance")[0][1]
  monkeypatch.setattr(compare.train, "run", lambda *args: {"preempted": True, "step": 3,
                                                            "steps": config.train.steps})

  def never(*args, **kwargs):
    raise AssertionError("a preempted run was evaluated")

  monkeypatch.setattr(compare.evaluate, "run", never)
  record = tmp_path / "results" / "v3_balance" / "seed_0"
  with pytest.raises(compare.Preempted, match="preempted at step 3 of 3000"):
    compare.run_one(settings_lib.derive(config, tokenizers.ByteTokenizer()),
                    str(tmp_path / "run"), str(record))
  assert not record.exists()
  assert compare.read_record(config_lib.resolved(config), str(record)) is None


def test_a_compare_over_records_trains_nothing_and_marks_other_code_versions(
    tmp_path, monkeypatch, capsys):
  records = tmp_path / "results"
  for mode, version in (("none", VERSION), ("distill", OTHER_VERSION)):
    config = compare.load(f"{PATH_STAR}:{mode}")[0][1]
    for seed in (0, 1):
      config.seed = seed
      compare.write_record(config_lib.resolved(config), str(records / mode / f"seed_{seed}"),
                           str(records / mode / f"seed_{seed}"), _figures(seed, version))

  def never(*args, **kwargs):
    raise AssertionError("a run with a record was prepared, trained or evaluated")

  for name in ("prepare_and_validate", "run_one"):
    monkeypatch.setattr(compare, name, never)
  rows = compare.run(f"{PATH_STAR}:none,{PATH_STAR}:distill", str(tmp_path / "runs"),
                     seeds=2, records=str(records))
  assert [(r["mode"], r["seeds"], r["version"]) for r in rows] == [
      ("none", 2, "aaaaaaa"), ("distill", 2, "bbbbbbb+1234")]
  assert rows[0]["test_nll_per_seed"] == [1.0, 1.01]
  assert "WARNING: figures from different code versions" in capsys.readouterr().out
  assert (records / "compare.md").exists() and not (tmp_path / "runs").exists()
  # records_only: the seeds and modes without a record are named and left out
  rows = compare.run(f"{PATH_STAR}:none,{PATH_STAR}:distill,{PATH_STAR}:myopic",
                     str(tmp_path / "runs"), seeds=3, records=str(records), records_only=True)
  assert [(r["mode"], r["seeds"]) for r in rows] == [("none", 2), ("distill", 2)]
  assert ("No record, left out: none/seed_2, distill/seed_2, myopic/seed_0, myopic/seed_1, "
          "myopic/seed_2") in capsys.readouterr().out
  with pytest.raises(ConfigError, match="no run of --configs has a record"):
    compare.run(f"{PATH_STAR}:myopic", str(tmp_path / "runs"), records=str(records),
                records_only=True)


def test_the_paired_by_graph_difference_of_a_mode_with_itself_is_zero():
  rng = np.random.default_rng(2)
  depth = rng.integers(1, 4, 200).tolist()
  runs = [_figures(s, per_graph={
      "data": {"name": "path_star"}, "depth": depth,
      "first": (rng.random(200) < 0.6).astype(float).tolist(),
      "g": [float(rng.normal()) if d >= 2 else None for d in depth]}) for s in (0, 1, 2)]
  out = ps_eval.paired_by_graph(runs, runs, resamples=200, seed=0)
  for key in ps_eval.PAIRED:
    assert out[key] == 0.0 and out[key + "_ci"] == [0.0, 0.0]


def test_paired_bootstrap_by_graph_is_the_mean_difference_and_narrower_than_unpaired():
  rng = np.random.default_rng(0)
  seeds, graphs = 3, 400
  difficulty = rng.normal(0.0, 1.0, graphs)  # shared by every run: what pairing cancels
  b = difficulty + rng.normal(0.0, 0.1, (seeds, graphs))
  a = b + 0.05 + rng.normal(0.0, 0.1, (seeds, graphs))
  diff, lo, hi = stats.paired_bootstrap_diff(a, b, 500, seed=3)
  assert diff == pytest.approx(a.mean() - b.mean(), abs=1e-12)  # the mean difference
  assert lo < diff < hi
  _, ulo, uhi = stats.paired_bootstrap_diff(a, b, 500, seed=3, paired=False)
  assert hi - lo < (uhi - ulo) / 5  # the graphs' shared difficulty cancels when paired
  # Against a direct loop: one draw of graphs per resample, for every seed and both modes.
  draws = np.random.default_rng(3).integers(0, graphs, size=(500, graphs))
  diffs = [(a[:, d].mean(1) - b[:, d].mean(1)).mean() for d in draws]
  np.testing.assert_allclose([lo, hi], np.percentile(diffs, [2.5, 97.5]), rtol=1e-10)
  # A graph without a value is left out of its run's mean.
  a[0, 0] = np.nan
  diff, lo, hi = stats.paired_bootstrap_diff(a, b, 200)
  assert diff == pytest.approx(np.mean(np.nanmean(a, 1) - b.mean(1))) and lo < diff < hi


def test_compare_pairs_modes_by_graph_where_they_share_the_test_graphs(tmp_path):
  rng = np.random.default_rng(1)
  graphs = 300
  depth = rng.integers(1, 4, graphs).tolist()
  data = {"name": "path_star", "split": "test", "options": {"seed": 0}}

  def per_graph(p_first, shift, data=data):
    return {"data": data, "depth": depth,
            "first": (rng.random(graphs) < p_first).astype(float).tolist(),
            "g": [float(0.1 * d + shift + rng.normal(0, 0.05)) if d >= 2 else None
                  for d in depth]}

  results = {
      "none": [_figures(s, per_graph=per_graph(0.5, 0.0)) for s in (0, 1)],
      "v1_token": [_figures(s, per_graph=per_graph(0.8, -0.1)) for s in (1, 0)],
      "other_data": [_figures(0, per_graph=per_graph(0.8, 0.0, {**data, "options": {}}))]}
  rows = {r["mode"]: r for r in compare.tabulate(results, str(tmp_path), "path_star",
                                                  resamples=300, seed=0)}
  chosen = np.asarray(depth) == 2
  by_seed = {r["seed"]: r["per_graph"] for r in results["none"]}  # seed i against seed i
  for key, field in ps_eval.PAIRED.items():
    a = np.asarray([[np.nan if v is None else v for v in r["per_graph"][field]]
                    for r in results["v1_token"]])[:, chosen]
    b = np.asarray([[np.nan if v is None else v for v in by_seed[r["seed"]][field]]
                    for r in results["v1_token"]])[:, chosen]
    row = rows["v1_token"]
    assert row[key] == pytest.approx(np.mean(a.mean(1) - b.mean(1)))
    assert row[key + "_ci"] == pytest.approx(list(stats.paired_bootstrap_diff(a, b, 300, 0)[1:]))
    assert row[key + "_n"] == f"2 seeds x {chosen.sum()} graphs"
    assert key not in rows["other_data"] and key not in rows["none"]  # other graphs; itself
  assert rows["v1_token"]["first_d2_paired"] > 0.2 and rows["v1_token"]["G_d2_paired"] < 0
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  assert "paired by graph" in table and f"n=2 seeds x {chosen.sum()} graphs" in table
  saved = json.loads((epath.Path(tmp_path) / "compare.json").read_text())
  assert "per_graph" not in saved["runs"]["none"][0]  # kept in each run's own record
