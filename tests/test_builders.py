"""TFDS builders: prepared offline as ArrayRecord, idempotent, right content, clear errors."""

import itertools
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax.data import builders, rhyme, tsp, tsp_tours
from lookahead_jax.data.tokenizers import SentencePieceTokenizer

SHAKESPEARE = Path(config_lib.TINY_SHAKESPEARE)  # shipped with the package
TINY = {"train_size": 40, "validation_size": 8, "test_size": 8}
TINY_TSP = {"levels": (4, 5), "grid_size": 5, "train_size": 20, "validation_size": 5,
            "test_size": 5}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def tsp_builder(data_dir):
  return builders.prepare("tsp", data_dir, **TINY_TSP)


@pytest.mark.parametrize("name", ["rhyme", "article"])
def test_prepare_text_testbed_is_idempotent(data_dir, name):
  built = builders.prepare(name, data_dir, **TINY)
  assert {k: v.num_examples for k, v in built.info.splits.items()} == {
      "train": 40, "validation": 8, "test": 8}
  assert built.info.file_format.value == "array_record"
  assert any(".array_record-" in f for f in os.listdir(built.data_dir))
  info = Path(built.data_dir) / "dataset_info.json"
  stamp = info.stat().st_mtime_ns
  again = builders.prepare(name, data_dir, **TINY)
  assert again.data_dir == built.data_dir and info.stat().st_mtime_ns == stamp
  record = builders.data_source(name, "validation", data_dir, **TINY)[0]
  assert set(record) == {"text", "spans"} and record["spans"].shape[1:] == (2,)


def test_config_names(data_dir):
  assert rhyme.Rhyme.make_config().name == "default"
  assert rhyme.Rhyme.make_config(seed=0).name == "default"  # the defaults
  custom = rhyme.Rhyme.make_config(**TINY)
  assert custom.name.startswith("custom-") and custom.train_size == 40
  assert rhyme.Rhyme.make_config(**TINY, seed=1).name != custom.name
  assert rhyme.Rhyme.make_config(**TINY).name == custom.name
  with pytest.raises(ValueError, match=r"unknown rhyme option\(s\) \['train_sise'\]"):
    builders.prepare("rhyme", data_dir, train_sise=3)


def test_seed_changes_the_data(data_dir):
  a = builders.data_source("article", "test", data_dir, **TINY)
  b = builders.data_source("article", "test", data_dir, **TINY, seed=1)
  assert [a[i]["text"] for i in range(8)] != [b[i]["text"] for i in range(8)]


def test_tsp_examples_are_consistent(tsp_builder, data_dir):
  tok = builders.default_tokenizer("tsp", **TINY_TSP)
  assert tsp_builder.info.metadata["vocab_size"] == tok.vocab_size == 3 + 5 + 5 + 5
  shares = tsp_builder.info.metadata["kept_share"]
  assert set(shares) == {"4", "5"} and all(0 < s < 1 for s in shares.values())
  for split in ("train", "validation", "test"):
    records = builders.data_source("tsp", split, data_dir, **TINY_TSP)
    for i in range(len(records)):
      r = records[i]
      n = int(r["num_cities"])
      coords, tour = r["coords"], r["tour"]
      assert tsp.is_valid_tour(tour, n) and tour[0] == 0 and tour[1] < tour[-1]
      best = min(tsp.tour_length(coords, (0,) + p)
                 for p in itertools.permutations(range(1, n)))
      assert tsp.tour_length(coords, tour) == pytest.approx(best, rel=1e-12)
      nearest = tsp_tours.nearest_neighbour(coords[None])
      assert tsp_tours.lengths(coords[None], nearest)[0] > best * (1 + 1e-9)
      ids, marks = tok.examples(coords[None], tour[None])
      np.testing.assert_array_equal(r["tokens"], ids[0])
      np.testing.assert_array_equal(r["needs_lookahead"], marks[0])
      assert marks.sum() == n - 2


def test_tsp_nearest_splits_hold_the_same_instances_with_the_nearest_neighbour_tour(
    tsp_builder, data_dir):
  tok = builders.default_tokenizer("tsp", **TINY_TSP)
  for split in ("train", "validation"):
    for n in TINY_TSP["levels"]:
      optimal = builders.data_source("tsp", f"{split}_n{n}", data_dir, **TINY_TSP)
      nearest = builders.data_source("tsp", f"{split}_nearest_n{n}", data_dir, **TINY_TSP)
      assert len(nearest) == len(optimal) == TINY_TSP[f"{split}_size"]
      by_cities = {tsp.city_sets(o["coords"][None])[0]: o for o in map(optimal.__getitem__,
                                                                          range(len(optimal)))}
      for i in range(len(nearest)):
        r = nearest[i]
        o = by_cities.pop(tsp.city_sets(r["coords"][None])[0])  # the same instance
        np.testing.assert_array_equal(r["coords"], o["coords"])
        np.testing.assert_array_equal(r["tour"], o["tour"])  # the feature stays the optimum
        tour = tsp_tours.nearest_neighbour(r["coords"][None])[0]
        ids, marks = tok.examples(r["coords"][None], tour[None])
        np.testing.assert_array_equal(r["tokens"], ids[0])
        np.testing.assert_array_equal(r["needs_lookahead"], marks[0])
        assert tok.decode_tour(r["tokens"][3 * n + 1:]) != o["tour"].tolist()  # filter
  with pytest.raises(Exception, match="test_nearest_n4"):
    builders.data_source("tsp", "test_nearest_n4", data_dir, **TINY_TSP)


def test_tsp_splits_are_disjoint_and_per_level(tsp_builder, data_dir):
  keys = {}
  for split in ("train", "validation", "test"):
    records = builders.data_source("tsp", split, data_dir, **TINY_TSP)
    keys[split] = {tsp.city_sets(records[i]["coords"][None])[0] for i in range(len(records))}
    per_level = set()
    for n in TINY_TSP["levels"]:
      level = builders.data_source("tsp", f"{split}_n{n}", data_dir, **TINY_TSP)
      assert len(level) == TINY_TSP[f"{split}_size"]
      assert {int(level[i]["num_cities"]) for i in range(len(level))} == {n}
      per_level |= {tsp.city_sets(level[i]["coords"][None])[0] for i in range(len(level))}
    assert per_level == keys[split]
  assert len(keys["train"]) == 40
  assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
  assert not keys["validation"] & keys["test"]


def test_bad_split_is_one_line(data_dir):
  with pytest.raises(ValueError, match="has no split 'valid'") as e:
    builders.data_source("rhyme", "valid", data_dir, **TINY)
  assert "\n" not in str(e.value)


def test_sentencepiece_is_trained_beside_the_dataset(data_dir):
  tok = builders.sentencepiece_for("rhyme", 320, data_dir, **TINY)
  path = Path(builders.builder("rhyme", data_dir, **TINY).data_dir) / "sentencepiece_320.model"
  assert tok.path == path and path.is_file()
  stamp = path.stat().st_mtime_ns
  again = builders.sentencepiece_for("rhyme", 320, data_dir, **TINY)
  assert isinstance(again, SentencePieceTokenizer) and path.stat().st_mtime_ns == stamp
  text = "A poem:\nCheddar is red\n"
  assert again.decode(again.encode(text)) == text
  with pytest.raises(ValueError, match="own token vocabulary"):
    builders.sentencepiece_for("tsp", 320, data_dir)


def _texts(data_dir, split, **options):
  records = builders.data_source("text_files", split, data_dir, **options)
  return [records[i]["text"].decode("utf-8") for i in range(len(records))]


def test_text_files_split_and_documents(tmp_path, data_dir):
  a = "para one\nline\n\npara two\n\n\npara three " * 30
  (tmp_path / "a.txt").write_text(a)
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "b.txt").write_text("x" * 100)
  (tmp_path / "sub" / "empty.txt").write_text("")
  options = {"paths": [tmp_path / "a.txt", str(tmp_path / "sub")]}
  built = builders.prepare("text_files", data_dir, **options)
  assert built.info.metadata["files"] == 3 and built.info.metadata["empty_files"] == 1
  parts = {s: _texts(data_dir, s, **options) for s in ("train", "validation", "test")}
  expected_a = builders.split_text(a, (0.9, 0.05, 0.05))
  expected_b = builders.split_text("x" * 100, (0.9, 0.05, 0.05))
  assert [len(p) for p in expected_b] == [90, 5, 5]
  for split, part_a, part_b in zip(("train", "validation", "test"), expected_a, expected_b):
    docs = parts[split]
    assert all(docs)  # no empty documents
    assert set(docs[-1]) == {"x"} and docs[-1] == part_b  # no delimiter in b: one document
    assert "".join(docs[:-1]) == part_a  # a's documents concatenate back exactly
    assert all(d.find("\n\n") == len(d) - 2 for d in docs[:-2])  # cut after each delimiter


def test_text_files_options(tmp_path, data_dir):
  (tmp_path / "a.txt").write_text("one\n\ntwo\n\nthree" * 40)
  whole = {"paths": [str(tmp_path / "*.txt")], "document_delimiter": None}
  assert len(_texts(data_dir, "train", **whole)) == 1
  name = builders.TextFiles.make_config(**whole).name
  assert name.startswith("a-")
  (tmp_path / "a.txt").write_text("changed")
  assert builders.TextFiles.make_config(**whole).name != name
  with pytest.raises(ValueError, match="split_fractions"):
    builders.TextFiles.make_config(paths=[tmp_path], split_fractions=(0.5, 0.1, 0.1))


def test_text_files_bad_input_is_one_line(tmp_path, data_dir):
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
  with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 \(byte 0xe9 at offset 3\)") as e:
    builders.prepare("text_files", data_dir, paths=[tmp_path / "latin1.txt"])
  assert "\n" not in str(e.value)
  replaced = builders.prepare("text_files", data_dir, paths=[tmp_path / "latin1.txt"],
                              encoding_errors="replace")
  assert replaced.info.metadata["replacement_characters"] == 50
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(ValueError, match=r"no text in .* \(all files are empty\)"):
    builders.prepare("text_files", data_dir, paths=[tmp_path / "empty.txt"])
  with pytest.raises(FileNotFoundError, match="no file matches"):
    builders.prepare("text_files", data_dir, paths=[tmp_path / "missing*.txt"])
  with pytest.raises(ValueError, match="needs paths="):
    builders.prepare("text_files", data_dir)


def test_text_files_reproduces_tiny_shakespeare_split(data_dir):
  text = SHAKESPEARE.read_text()
  options = {"paths": [SHAKESPEARE]}
  parts = {s: "".join(_texts(data_dir, s, **options)) for s in ("train", "validation", "test")}
  # TFDS tiny_shakespeare: train = text[:int(0.9 n)], the rest cut in half.
  cut = int(len(text) * 0.9)
  rest = text[cut:]
  half = int(len(rest) * 0.5)
  assert parts == {"train": text[:cut], "validation": rest[:half], "test": rest[half:]}
  assert [len(p) for p in parts.values()] == [1003854, 55770, 55770]


def test_unprepared_tfds_dataset_is_one_line_without_network(data_dir, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("a download was attempted")

  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  for name in ("lm1b", "tiny_shakespeare", "c4/en", "no_such_dataset"):
    with pytest.raises(builders.DatasetNotPreparedError) as e:
      builders.prepare(name, data_dir)
    message = str(e.value)
    assert "\n" not in message and repr(name) in message
    assert f"tfds build {name} --data_dir=DIR --file_format=array_record" in message
  with pytest.raises(ValueError, match="only apply to the local builders"):
    builders.prepare("lm1b", data_dir, train_size=3)


def test_data_dir_default(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  assert builders.resolve_data_dir() == str(tmp_path)
  assert builders.resolve_data_dir("~/x") == os.path.expanduser("~/x")
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert builders.resolve_data_dir() == os.path.expanduser("~/tensorflow_datasets")
