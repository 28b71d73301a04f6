"""grain pipeline: batch format, determinism, resumption, lossless packing, sharding, marks."""

import collections

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from lookahead_jax.data import builders, pipeline, rhyme
from lookahead_jax.data.tokenizers import ByteTokenizer

T = 32
TINY = {"train_size": 60, "validation_size": 20, "test_size": 20}
TINY_TSP = {"levels": (4, 6), "grid_size": 5, "train_size": 20, "validation_size": 6,
            "test_size": 6}
# Documents of 0 to 95 content bytes: shorter than, about as long as and longer than T.
DOCS = ["".join(chr(ord("a") + (i * 7 + j) % 26) for j in range(n)) + "\n"
        for i, n in enumerate([0, 1, 5, 30, 31, 32, 33, 64, 95, 3, 17, 40])]


class LookaheadPipelineTestText(tfds.core.GeneratorBasedBuilder):
  """A TFDS text dataset defined outside this project, read by name like lm1b."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": np.int32}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, doc in enumerate(DOCS):
      yield i, {"text": doc[:-1], "label": i}  # the first document is empty


@pytest.fixture(scope="module")
def text_options(tmp_path_factory):
  """text_files options: one file whose documents are DOCS, all in the train split."""
  text = tmp_path_factory.mktemp("text") / "docs.txt"
  text.write_text("\n".join(DOCS))  # blank lines between documents
  return {"paths": [str(text)], "split_fractions": (1.0, 0.0, 0.0)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, text_options):
  path = tmp_path_factory.mktemp("tfds")
  builders.prepare("text_files", path, **text_options)
  LookaheadPipelineTestText(data_dir=path, file_format="array_record").download_and_prepare()
  return path


def _batches(it, n=None):
  return [next(it) for _ in range(n)] if n is not None else list(it)


def _equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _segments(batches):
  """(inputs, targets, marks) of every segment, in order."""
  out = []
  for b in batches:
    for row in range(len(b["inputs"])):
      for s in np.unique(b["segment_ids"][row]):
        if s:
          at = b["segment_ids"][row] == s
          out.append((b["inputs"][row][at], b["targets"][row][at], b["needs_lookahead"][row][at]))
  return out


def test_batch_format(data_dir):
  it = pipeline.make_iterator("rhyme", "train", seq_len=T, global_batch_size=4,
                              data_dir=data_dir, options=TINY, process_count=1,
                              process_index=0)
  for b in _batches(it, 6):
    assert set(b) == set(pipeline.BATCH_KEYS)
    dtypes = {"inputs": np.int32, "targets": np.int32, "weights": np.float32,
              "segment_ids": np.int32, "positions": np.int32, "needs_lookahead": np.bool_}
    for k, dtype in dtypes.items():
      assert b[k].shape == (4, T) and b[k].dtype == dtype, k
    np.testing.assert_array_equal(b["weights"], b["segment_ids"] > 0)
    for row in range(4):
      seg, pos = b["segment_ids"][row], b["positions"][row]
      for s in np.unique(seg[seg > 0]):
        at = np.flatnonzero(seg == s)
        assert (np.diff(at) == 1).all()  # contiguous
        np.testing.assert_array_equal(pos[at], np.arange(len(at)))
        # within a segment, each target is the next input
        np.testing.assert_array_equal(b["inputs"][row][at[1:]], b["targets"][row][at[:-1]])
      assert (b["inputs"][row][seg == 0] == 0).all() and (b["targets"][row][seg == 0] == 0).all()
      assert not b["needs_lookahead"][row][seg == 0].any()


def test_same_seed_same_batches(data_dir):
  kwargs = dict(seq_len=T, global_batch_size=4, data_dir=data_dir, options=TINY,
                process_index=0, process_count=1)
  a = _batches(pipeline.make_iterator("article", "train", seed=3, **kwargs), 8)
  b = _batches(pipeline.make_iterator("article", "train", seed=3, **kwargs), 8)
  c = _batches(pipeline.make_iterator("article", "train", seed=4, **kwargs), 8)
  _equal(a, b)
  assert any((x["inputs"] != y["inputs"]).any() for x, y in zip(a, c))


def _train(data_dir, **kwargs):
  return pipeline.make_iterator("rhyme", "train", seq_len=T, global_batch_size=8, seed=1,
                                data_dir=data_dir, options=TINY, process_index=0,
                                process_count=1, packing_bins=16, **kwargs)


def test_restore_mid_epoch_yields_the_following_batches(data_dir):
  it = _train(data_dir)
  _batches(it, 7)
  state = it.get_state()
  counters = it.counters()
  expected = _batches(it, 40)  # crosses epoch boundaries (60 documents per epoch)
  resumed = _train(data_dir)
  resumed.set_state(state)
  assert resumed.counters() == counters
  _equal(_batches(resumed, 40), expected)
  assert resumed.counters() == it.counters()


def test_restore_through_orbax_checkpoint_manager(data_dir, tmp_path):
  it = _train(data_dir)
  _batches(it, 5)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = _batches(it, 12)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    resumed = manager.restore(
        5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(_train(data_dir))))
  _equal(_batches(resumed["data"], 12), expected)


def _stored_docs(data_dir, text_options):
  records = builders.data_source("text_files", "train", data_dir, **text_options)
  return [records[i]["text"].decode() for i in range(len(records))]


def test_packing_loses_no_tokens_and_counts(data_dir, text_options):
  tok = ByteTokenizer()
  it = pipeline.make_ordered_iterator("text_files", "train", seq_len=T, global_batch_size=4,
                                   data_dir=data_dir, options=text_options,
                                   process_index=0, process_count=1)
  batches = _batches(it)
  docs = _stored_docs(data_dir, text_options)
  assert len(docs) == len(DOCS)
  framed = [[tok.eod_id] + tok.encode(d) + [tok.eod_id] for d in docs]
  pieces = collections.Counter()
  for doc in framed:
    for start in range(0, len(doc) - 1, T):
      piece = doc[start:start + T + 1]
      pieces[tuple(piece[:-1]), tuple(piece[1:])] += 1
  seen = collections.Counter((tuple(i), tuple(t)) for i, t, _ in _segments(batches))
  assert seen == pieces  # every piece once, nothing else
  pairs = sum(len(d) - 1 for d in framed)
  weights = sum(b["weights"].sum() for b in batches)
  assert weights == pairs
  c = it.counters()
  assert c["tokens_in"] == c["tokens_out"] == pairs
  assert c["padding"] == len(batches) * 4 * T - pairs
  lengths = [len(d) - 1 for d in framed]  # pairs per document
  assert c["documents"] == len(DOCS)
  assert c["pieces"] == sum(-(-n // T) for n in lengths) == len(_segments(batches))
  assert c["short_documents"] == sum(n < T for n in lengths)
  assert c["split_documents"] == sum(n > T for n in lengths)
  assert c["empty_documents"] == 0  # text_files documents are never empty


def test_training_epoch_counts_match(data_dir, text_options):
  it = pipeline.make_iterator("text_files", "train", seq_len=T, global_batch_size=4,
                              data_dir=data_dir, options=text_options, num_epochs=2,
                              process_index=0, process_count=1)
  batches = _batches(it)
  c = it.counters()
  assert c["documents"] == 2 * len(DOCS)
  assert c["tokens_in"] == c["tokens_out"] == sum(b["weights"].sum() for b in batches)


def test_tfds_dataset_by_name_with_an_empty_document(data_dir):
  it = pipeline.make_ordered_iterator("lookahead_pipeline_test_text", "train", seq_len=T,
                                   global_batch_size=2, data_dir=data_dir,
                                   process_index=0, process_count=1)
  segments = _segments(_batches(it))
  assert ([1], [1]) in [(list(i), list(t)) for i, t, _ in segments]  # EOD -> EOD
  c = it.counters()
  assert c["empty_documents"] == 1 and c["documents"] == len(DOCS)
  with pytest.raises(ValueError, match="has no feature 'body'.*text_key="):
    pipeline.make_iterator("lookahead_pipeline_test_text", "train", seq_len=T,
                           global_batch_size=2, data_dir=data_dir, text_key="body")


def test_unprepared_tfds_dataset_is_one_line(data_dir):
  with pytest.raises(builders.DatasetNotPreparedError, match="'lm1b' is not prepared") as e:
    pipeline.make_iterator("lm1b", "train", seq_len=T, global_batch_size=2, data_dir=data_dir)
  assert "\n" not in str(e.value)


def test_process_shards_are_disjoint_and_complete(data_dir, text_options):
  tok = ByteTokenizer()
  kwargs = dict(seq_len=T, global_batch_size=4, data_dir=data_dir, options=text_options,
                num_epochs=1, process_count=2)
  targets = collections.Counter()
  for p in range(2):
    batches = _batches(pipeline.make_iterator("text_files", "train", process_index=p, **kwargs))
    assert all(b["inputs"].shape == (2, T) for b in batches)
    targets.update(t for b in batches for t in b["targets"][b["weights"] > 0].tolist())
  expected = collections.Counter(t for d in _stored_docs(data_dir, text_options)
                                 for t in tok.encode(d) + [tok.eod_id])
  assert targets == expected
  with pytest.raises(ValueError, match="global_batch_size=5 must be a positive multiple of "
                     "process_count=2"):
    pipeline.make_iterator("text_files", "train", **dict(kwargs, global_batch_size=5),
                           process_index=0)


def test_eval_processes_take_rows_of_the_same_global_batches(data_dir):
  kwargs = dict(seq_len=T, global_batch_size=4, data_dir=data_dir, options=TINY)
  single = _batches(pipeline.make_ordered_iterator("article", "test", process_index=0,
                                                process_count=1, **kwargs))
  parts = [_batches(pipeline.make_ordered_iterator("article", "test", process_index=p,
                                                process_count=2, **kwargs)) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == len(single)
  for whole, a, b in zip(single, *parts):
    for k in whole:
      np.testing.assert_array_equal(whole[k], np.concatenate([a[k], b[k]]))
  tok = ByteTokenizer()
  records = builders.data_source("article", "test", data_dir, **TINY)
  pairs = sum(len(tok.encode(records[i]["text"].decode())) + 1 for i in range(len(records)))
  assert sum(b["weights"].sum() for part in parts for b in part) == pairs  # each token once
  assert sum(b["weights"].sum() for b in single) == pairs


def test_needs_lookahead_rhyme_marks_colour_words(data_dir):
  tok = ByteTokenizer()
  it = pipeline.make_ordered_iterator("rhyme", "validation", seq_len=256, global_batch_size=4,
                                   data_dir=data_dir, options=TINY, process_index=0,
                                   process_count=1)
  marked_words = []
  for inputs, targets, marks in _segments(_batches(it)):
    runs = np.split(np.flatnonzero(marks), np.flatnonzero(np.diff(np.flatnonzero(marks)) > 1) + 1)
    marked_words += [tok.decode(targets[r]) for r in runs if len(r)]
    for r in (r for r in runs if len(r)):
      assert tok.decode(inputs[r[0]:r[0] + 1]) in (" ", "")  # the word starts after "is "
  assert marked_words and set(marked_words) <= set(rhyme.RHYMES)
  records = builders.data_source("rhyme", "validation", data_dir, **TINY)
  assert len(marked_words) == sum(len(records[i]["spans"]) for i in range(len(records)))


def test_needs_lookahead_article_marks_the_deciding_byte(data_dir):
  tok = ByteTokenizer()
  it = pipeline.make_ordered_iterator("article", "validation", seq_len=64, global_batch_size=4,
                                   data_dir=data_dir, options=TINY, process_index=0,
                                   process_count=1)
  count = 0
  for inputs, targets, marks in _segments(_batches(it)):
    for k in np.flatnonzero(marks):
      assert tok.decode(inputs[max(k - 1, 0):k + 1]).endswith("a")
      assert tok.decode(targets[k:k + 1]) in ("n", " ")
      count += 1
  records = builders.data_source("article", "validation", data_dir, **TINY)
  assert count == sum(len(records[i]["spans"]) for i in range(len(records)))


def test_needs_lookahead_tsp_marks_tour_choices(data_dir):
  tok = builders.default_tokenizer("tsp", **TINY_TSP)
  it = pipeline.make_ordered_iterator("tsp", "test", seq_len=64, global_batch_size=2,
                                   data_dir=data_dir, options=TINY_TSP, process_index=0,
                                   process_count=1)
  segments = _segments(_batches(it))
  assert len(segments) == 12
  for inputs, targets, marks in segments:
    n = (len(inputs) - 2) // 4  # [EOD] n triples, sep, n cities
    sep = int(np.flatnonzero(targets == tok.sep_id)[0])
    assert marks.tolist() == [False] * (sep + 2) + [True] * (n - 2) + [False, False]
    assert all(tok.city_of(t) is not None for t in targets[marks])
  with pytest.raises(ValueError, match="tsp is stored as tokens of its own vocabulary"):
    pipeline.make_iterator("tsp", "test", seq_len=64, global_batch_size=2, data_dir=data_dir,
                           options=TINY_TSP, tokenizer="byte")


def test_other_tokenizers(data_dir, gpt2_style_dir):
  it = pipeline.make_ordered_iterator("article", "validation", seq_len=T, global_batch_size=4,
                                   data_dir=data_dir, options=TINY, tokenizer=gpt2_style_dir,
                                   process_index=0, process_count=1)
  batches = _batches(it)
  from lookahead_jax.data.tokenizers import HFTokenizer
  tok = HFTokenizer.from_dir(gpt2_style_dir)
  marked = [tok.decode([t]) for b in batches for t in b["targets"][b["needs_lookahead"]]]
  assert marked and set(marked) <= {" a", " an"}
  assert all((b["inputs"][b["weights"] == 0] == tok.pad_id).all() for b in batches)


def test_bad_arguments(data_dir):
  with pytest.raises(ValueError, match="seq_len=0 must be >= 1"):
    pipeline.make_iterator("rhyme", "train", seq_len=0, global_batch_size=2, data_dir=data_dir,
                           options=TINY, process_index=0, process_count=1)
  with pytest.raises(ValueError, match=r"process_index=2 is not in \[0, process_count=2\)"):
    pipeline.make_iterator("rhyme", "train", seq_len=T, global_batch_size=2, data_dir=data_dir,
                           options=TINY, process_index=2, process_count=2)


def test_global_batch_on_the_mesh(data_dir):
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  rows = len(jax.devices())
  it = pipeline.make_iterator("rhyme", "train", seq_len=T, global_batch_size=rows,
                              data_dir=data_dir, options=TINY)
  local = next(it)
  arrays = pipeline.global_batch(local, sharding)
  for k, v in arrays.items():
    assert v.shape == (rows, T) and v.sharding == sharding
    np.testing.assert_array_equal(np.asarray(v), local[k])
  assert set(arrays) == set(pipeline.BATCH_KEYS)
