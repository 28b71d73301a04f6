"""The testbeds, registered once: name -> `local.Testbed` (its builder, vocabulary, marks,
mark groups, prompts and judge). Every other module reaches a testbed through `get`."""

from __future__ import annotations

from lookahead_jax.data import article, local, path_star, rhyme, tsp

TESTBEDS: dict[str, local.Testbed] = {
    t.name: t for t in (rhyme.TESTBED, article.TESTBED, tsp.TESTBED, path_star.TESTBED)}
DEFAULT = rhyme.NAME  # the base config's dataset


def base_name(dataset: str) -> str:
  """"c4/en:3.1.0" -> "c4"."""
  return dataset.split("/")[0].split(":")[0]


def get(dataset: str) -> local.Testbed | None:
  """The testbed of a dataset name (with or without a TFDS version), None for other data."""
  return TESTBEDS.get(base_name(dataset))


def own_vocabulary(dataset: str) -> bool:
  """Whether the dataset is stored as tokens and marks of a testbed's own vocabulary."""
  testbed = get(dataset)
  return testbed is not None and testbed.own_vocabulary


def task_return(dataset: str, **options):
  """The testbed's return of an answer (`Testbed.task_return`) for its builder options; a
  one-line ValueError for data without one."""
  testbed = get(dataset)
  if testbed is None or testbed.task_return is None:
    with_one = sorted(name for name, t in TESTBEDS.items() if t.task_return)
    raise ValueError(f"lookahead.reward='task': {dataset} has no task return (testbeds with "
                     f"one: {', '.join(with_one)}); use lookahead.reward='log_prob'")
  return testbed.task_return(**options)


def own_vocabulary_names() -> list[str]:
  return [name for name, t in TESTBEDS.items() if t.own_vocabulary]
