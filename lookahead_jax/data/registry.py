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


def own_vocabulary_names() -> list[str]:
  return [name for name, t in TESTBEDS.items() if t.own_vocabulary]
