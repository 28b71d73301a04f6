"""GPT-2 checkpoints: Hugging Face parity (logits, greedy, beam search), export, tokenizer, errors.

The parity tests build one small random `GPT2LMHeadModel` (PyTorch, CPU) and need torch and
transformers (the `bench` extra); they are skipped without them. Its weights are drawn with
a large initializer range so next-token distributions are peaked: candidates then differ by
far more than float rounding and sequences can be compared exactly.
"""

import collections
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from lookahead_jax import config as config_lib
from lookahead_jax import decoding, evaluate, gpt2
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib

PAD = 1  # not 0: HF fills ended beams with `pad_token_id or eos`, i.e. with EOS when pad is 0
PROMPT_LEN, NEW_TOKENS, BEAMS = 10, 10, 4
HF_MISSING = "needs the bench extra: pip install torch==2.13.0, then pip install -e .[bench]"


def _hf():
  torch = pytest.importorskip("torch", reason=HF_MISSING)
  transformers = pytest.importorskip("transformers", reason=HF_MISSING)
  transformers.logging.set_verbosity_error()
  return torch, transformers


@pytest.fixture(scope="module")
def hf_model():
  torch, transformers = _hf()
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=1000, n_positions=64, n_layer=2, n_embd=64, n_head=4, initializer_range=0.2,
      bos_token_id=None, eos_token_id=None, pad_token_id=PAD)
  return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
  """The model as `save_pretrained` writes it: config.json + model.safetensors (transformer.*)."""
  path = tmp_path_factory.mktemp("hf_gpt2")
  hf_model.save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def loaded(hf_dir):
  return gpt2.load(hf_dir)


@pytest.fixture(scope="module")
def prompts():
  """32 left-padded prompts [32, PROMPT_LEN] of lengths 2..10, and the lengths."""
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, PROMPT_LEN + 1, 32)
  tokens = rng.integers(2, 1000, (len(lengths), PROMPT_LEN))
  tokens[np.arange(PROMPT_LEN)[None] < (PROMPT_LEN - lengths)[:, None]] = PAD
  return tokens, lengths


def _hf_generate(hf_model, prompts, **kwargs):
  """HF generate on left-padded prompts -> (new tokens [rows, k, NEW_TOKENS], scores or None)."""
  torch, _ = _hf()
  tokens, lengths = prompts
  mask = np.arange(PROMPT_LEN)[None] >= (PROMPT_LEN - lengths)[:, None]
  with torch.no_grad():
    out = hf_model.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask).long(),
                            max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=PAD,
                            return_dict_in_generate=True, output_scores=True, **kwargs)
  new = out.sequences[:, PROMPT_LEN:].numpy()  # cropped to the longest returned sequence
  new = np.pad(new, ((0, 0), (0, NEW_TOKENS - new.shape[1])), constant_values=PAD)
  k = kwargs.get("num_return_sequences", 1)
  scores = getattr(out, "sequences_scores", None)
  return new.reshape(len(tokens), k, NEW_TOKENS), None if scores is None else scores.numpy()


def _hf_beams(hf_model, prompts, eos, length_penalty, k=BEAMS, early_stopping=False):
  return _hf_generate(hf_model, prompts, num_beams=BEAMS, num_return_sequences=k,
                      eos_token_id=eos, length_penalty=length_penalty,
                      early_stopping=early_stopping)


def _our_beams(loaded, prompts, eos, length_penalty):
  config, params = loaded
  tokens, lengths = prompts
  return decoding.beam_search(params, jnp.asarray(tokens), jnp.asarray(lengths), length_penalty,
                              config=config, beam_size=BEAMS, max_new_tokens=NEW_TOKENS,
                              eos_id=eos, pad_id=PAD)


@pytest.fixture(scope="module")
def eos(hf_model, prompts):
  """An EOS id that makes HF's early-stop heuristic (early_stopping=False) matter.

  Tried in order of frequency among the greedy continuations; accepted when, for some
  prompt, stopping by the heuristic returns other beams than searching to the end
  (early_stopping="never"), so parity below covers EOS candidates, length-normalised
  finished scores and the heuristic.
  """
  greedy, _ = _hf_generate(hf_model, prompts)
  for token, _ in collections.Counter(greedy.ravel().tolist()).most_common(8):
    default, _ = _hf_beams(hf_model, prompts, token, 1.0)
    never, _ = _hf_beams(hf_model, prompts, token, 1.0, early_stopping="never")
    if np.any(default != never):
      return token
  pytest.fail("no frequent token makes HF's early-stop heuristic matter on these prompts")


def test_logits_match_hugging_face(hf_model, loaded, forward):
  torch, _ = _hf()
  config, params = loaded
  tokens = np.random.default_rng(1).integers(0, 1000, (3, 40))
  with torch.no_grad():
    expected = hf_model(torch.tensor(tokens)).logits.numpy()
  positions = jnp.broadcast_to(jnp.arange(40), tokens.shape)
  logits, _ = forward(params, jnp.asarray(tokens), positions, config=config)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
  assert config == model_lib.Config(vocab_size=1000, max_len=64, num_layers=2, d_model=64,
                                    num_heads=4)


def test_pytorch_bin_with_bare_keys_and_mask_buffers_loads_the_same_params(hf_model, hf_dir,
                                                                           loaded, tmp_path):
  torch, _ = _hf()
  # The layout of the original hub files: no `transformer.` prefix, causal-mask buffers.
  state = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
  for i in range(2):
    state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool))[None, None]
    state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
  assert "lm_head.weight" in state  # tied: must equal wte.weight
  torch.save(state, tmp_path / "pytorch_model.bin")
  shutil.copy(hf_dir / "config.json", tmp_path)
  config, params = gpt2.load(tmp_path)
  assert config == loaded[0]
  jax.tree.map(np.testing.assert_array_equal, params, loaded[1])


def test_greedy_matches_hugging_face(hf_model, loaded, prompts, eos):
  config, params = loaded
  tokens, lengths = prompts
  expected, _ = _hf_generate(hf_model, prompts, eos_token_id=eos)
  ours = decoding.generate(params, jnp.asarray(tokens), jax.random.key(0), jnp.asarray(lengths),
                           config=config, max_new_tokens=NEW_TOKENS, eos_id=eos, pad_id=PAD)
  np.testing.assert_array_equal(ours, expected[:, 0])
  assert np.any(np.asarray(ours) == eos)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_search_with_eos_matches_hugging_face(hf_model, loaded, prompts, eos,
                                                   length_penalty):
  expected, scores = _hf_beams(hf_model, prompts, eos, length_penalty)
  best, _ = _hf_beams(hf_model, prompts, eos, length_penalty, k=1)
  beams = _our_beams(loaded, prompts, eos, length_penalty)
  np.testing.assert_array_equal(beams.sequences, expected)
  np.testing.assert_array_equal(beams.sequences[:, :1], best)
  np.testing.assert_allclose(beams.scores, scores.reshape(-1, BEAMS), atol=1e-4, rtol=1e-5)
  assert np.all(beams.valid)
  if length_penalty == 1.0:  # the case the `eos` fixture was chosen for
    assert np.any(beams.lengths < NEW_TOKENS)


def test_beam_search_without_eos_matches_hugging_face(hf_model, loaded, prompts):
  expected, scores = _hf_beams(hf_model, prompts, None, 1.0)
  beams = _our_beams(loaded, prompts, None, 1.0)
  np.testing.assert_array_equal(beams.sequences, expected)
  np.testing.assert_allclose(beams.scores, scores.reshape(-1, BEAMS), atol=1e-4, rtol=1e-5)
  assert np.all(beams.lengths == NEW_TOKENS)


# ----------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Our random model (mlp_ratio 2) written by `gpt2.save_pretrained`; no torch needed."""
  config = model_lib.Config(vocab_size=512, max_len=16, num_layers=2, d_model=32, num_heads=4,
                            mlp_ratio=2)
  params = model_lib.init(config, jax.random.key(0))
  path = tmp_path_factory.mktemp("exported")
  gpt2.save_pretrained(path, config, params, eos_id=3)
  return path, config, params


def test_export_reloads_to_the_same_config_and_params(exported):
  path, config, params = exported
  config2, params2 = gpt2.load(path)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_exported_directory_loads_in_hugging_face_with_equal_logits(exported, forward):
  torch, transformers = _hf()
  path, config, params = exported
  hf_model, info = transformers.GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
  assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  assert hf_model.config.eos_token_id == 3 and hf_model.config.n_inner == 64
  tokens = np.random.default_rng(2).integers(0, config.vocab_size, (2, 16))
  with torch.no_grad():
    expected = hf_model.eval()(torch.tensor(tokens)).logits.numpy()
  logits, _ = forward(params, jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(16), (2, 16)),
                      config=config)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_from_the_checkpoint_directory_matches_the_tokenizers_library(
    exported, gpt2_style_dir, tmp_path):
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top

  path, config, _ = exported
  shutil.copytree(path, tmp_path, dirs_exist_ok=True)
  shutil.copy(gpt2_style_dir / "tokenizer.json", tmp_path)  # a byte-level BPE, vocab 500
  reference = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))

  tokenizer = gpt2.load_tokenizer(tmp_path)
  assert gpt2.load(tmp_path)[0] == config  # model and tokenizer from one directory
  assert tokenizer.vocab_size == reference.get_vocab_size() <= config.vocab_size
  assert tokenizer.eod_id == reference.token_to_id("<|endoftext|>")
  for text in ["Cheddar is orange, so you can see it at night.",
               "  Unseen words: Mozzarella, Gruyère — 🧀 and tabs\tand\nnewlines  ", ""]:
    ids = tokenizer.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == text
  assert len(tokenizer.encode("Cheddar is orange")) < len("Cheddar is orange") // 2  # merges


# ----------------------------------------------------------------------------- errors


def _one_line_error(error, fn, *args):
  with pytest.raises(error) as info:
    fn(*args)
  message = str(info.value)
  assert message and "\n" not in message
  return message


@pytest.fixture
def checkpoint(exported, tmp_path):
  """A writable copy of the exported checkpoint."""
  shutil.copytree(exported[0], tmp_path, dirs_exist_ok=True)
  return tmp_path


def _edit_config(path, **changes):
  config = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**config, **changes}))


def test_missing_files_are_named(checkpoint):
  (checkpoint / "model.safetensors").unlink()
  assert "no model.safetensors or pytorch_model.bin" in _one_line_error(
      FileNotFoundError, gpt2.load, checkpoint)
  (checkpoint / "config.json").unlink()
  assert "no config.json" in _one_line_error(FileNotFoundError, gpt2.load, checkpoint)


@pytest.mark.parametrize("key, value, expected", [
    ("model_type", "llama", "model_type='llama'"),
    ("architectures", ["GPT2ForSequenceClassification"], "architectures="),
    ("activation_function", "relu", "activation_function='relu'"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=true"),
    ("reorder_and_upcast_attn", True, "reorder_and_upcast_attn=true"),
    ("scale_attn_weights", False, "scale_attn_weights=false"),
    ("add_cross_attention", True, "add_cross_attention=true"),
    ("tie_word_embeddings", False, "tie_word_embeddings=false"),
    ("n_inner", 40, "n_inner=40 is not a multiple of n_embd=32"),
])
def test_unsupported_architectures_are_rejected(checkpoint, key, value, expected):
  _edit_config(checkpoint, **{key: value})
  message = _one_line_error(ValueError, gpt2.load, checkpoint)
  assert message.startswith(f"{checkpoint}: unsupported GPT-2 checkpoint") and expected in message


def test_gelu_pytorch_tanh_is_accepted(checkpoint, exported):
  _edit_config(checkpoint, activation_function="gelu_pytorch_tanh")
  assert gpt2.load(checkpoint)[0] == exported[1]


def test_shape_mismatch_names_the_tensor_and_both_shapes(checkpoint):
  _edit_config(checkpoint, n_positions=8)
  message = _one_line_error(ValueError, gpt2.load, checkpoint)
  assert "wpe.weight" in message and "(16, 32)" in message and "(8, 32)" in message


def test_missing_and_unexpected_tensors_are_named(exported):
  _, config, params = exported
  state = gpt2.hf_state_dict(params)
  missing = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.weight"}
  assert "h.1.mlp.c_fc.weight" in _one_line_error(
      ValueError, gpt2.params_from_hf_state_dict, missing, config)
  extra = {**state, "transformer.h.2.ln_1.weight": state["transformer.h.1.ln_1.weight"]}
  assert "h.2.ln_1.weight" in _one_line_error(
      ValueError, gpt2.params_from_hf_state_dict, extra, config)


def test_lm_head_must_be_tied(exported):
  _, config, params = exported
  state = gpt2.hf_state_dict(params)
  tied = {**state, "lm_head.weight": state["transformer.wte.weight"].copy()}
  jax.tree.map(np.testing.assert_array_equal, gpt2.params_from_hf_state_dict(tied, config), params)
  untied = {**state, "lm_head.weight": state["transformer.wte.weight"] + 1.0}
  assert "lm_head.weight differs" in _one_line_error(
      ValueError, gpt2.params_from_hf_state_dict, untied, config)


def test_pytorch_bin_without_torch_says_how_to_install_it(checkpoint, monkeypatch):
  (checkpoint / "model.safetensors").unlink()
  (checkpoint / "pytorch_model.bin").write_bytes(b"never read: importing torch fails first")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  assert "pip install torch" in _one_line_error(ImportError, gpt2.load, checkpoint)


def test_sharded_checkpoint_loads_and_a_missing_shard_is_named(checkpoint, exported):
  _, config, params = exported
  state = safetensors.numpy.load_file(str(checkpoint / "model.safetensors"))
  (checkpoint / "model.safetensors").unlink()
  names = sorted(state)
  shards = {"model-00001-of-00002.safetensors": names[:5],
            "model-00002-of-00002.safetensors": names[5:]}
  for shard, keys in shards.items():
    safetensors.numpy.save_file({k: state[k] for k in keys}, str(checkpoint / shard))
  weight_map = {k: shard for shard, keys in shards.items() for k in keys}
  (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  config2, params2 = gpt2.load(checkpoint)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  (checkpoint / "model-00002-of-00002.safetensors").unlink()
  assert "model-00002-of-00002.safetensors" in _one_line_error(
      FileNotFoundError, gpt2.load, checkpoint)



@pytest.fixture
def amplify_config(hf_dir, gpt2_style_dir, tmp_path):
  """configs/experiments/gpt2_amplify.py on the small random checkpoint (and its path)."""
  from lookahead_jax.data import rhyme

  from conftest import REPO, load_config

  checkpoint = tmp_path / "gpt2"
  shutil.copytree(hf_dir, checkpoint)
  shutil.copy(gpt2_style_dir / "tokenizer.json", checkpoint)
  rng = np.random.default_rng(0)
  text = tmp_path / "poems.txt"
  text.write_text("\n\n".join(rhyme.rhyme_document(rng)[0] for _ in range(300)))
  overrides = {"data.options.paths": (str(text),), "data.data_dir": str(tmp_path / "data"),
               "eval.max_batches": 1, "eval.batch_size": 8, "eval.widths": (2,),
               "eval.horizons": (1, 3)}
  path = os.path.join(REPO, "configs", "experiments", "gpt2_amplify.py")
  return load_config(path, overrides, argument=str(checkpoint)), checkpoint, path, overrides


def test_gpt2_amplify_experiment_runs_end_to_end(amplify_config, tmp_path):
  """The evaluation of the experiment config reads GPT-2's weights, with its report."""
  config, checkpoint, _, _ = amplify_config
  report = evaluate.run(settings_lib.validate(config), str(tmp_path / "work"))
  assert report["params"] == f"the pretrained {checkpoint}"  # GPT-2's weights, not fresh ones
  assert {(r["kind"], r["horizon"]) for r in report["rows"]} == {
      ("beam", 1), ("beam", 3), ("smc", 1), ("smc", 3)}
  assert (tmp_path / "work" / "eval" / "report.json").is_file()
  config.model.num_layers += 1  # a model that is not the checkpoint's is refused up front
  with pytest.raises(config_lib.ConfigError, match="model.num_layers=.*the checkpoint in"):
    settings_lib.validate(config)


def test_every_command_without_a_checkpoint_runs_on_the_pretrained_weights(amplify_config,
                                                                          tmp_path):
  """One order everywhere (state_lib.load_params): checkpoint, else `pretrained`, else fresh."""
  import subprocess
  import sys

  config, checkpoint, path, overrides = amplify_config
  settings = settings_lib.prepare_and_validate(config)  # as every command does first
  params, source = state_lib.load_params(settings, str(tmp_path / "w"))
  assert source == f"the pretrained {checkpoint}"
  jax.tree.map(np.testing.assert_array_equal, params, gpt2.load(checkpoint)[1])
  flags = [f"--config.{k}={v}" for k, v in overrides.items()
           if k in ("data.options.paths", "data.data_dir")]
  result = subprocess.run(
      [sys.executable, "-m", "lookahead_jax.main", "decode", f"--config={path}:{checkpoint}",
       f"--workdir={tmp_path / 'w'}", "--prompt=Cheddar is", "--max_new_tokens=3", *flags],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "freshly initialised" not in result.stderr
  assert result.stdout.startswith("--- greedy, 'Cheddar is':")
