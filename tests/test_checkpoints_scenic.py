"""Tests for vivit_adapter.checkpoints.scenic: flax-serialised scenic TrainStates."""

import functools
import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import merge, scenic

_VIDEO = np.random.default_rng(1).normal(size=(1, 8, 16, 16, 3)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _model():
  cfg = configs.base_config().model
  cfg.hidden_size, cfg.patches.size = 32, (4, 4, 2)
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 2, 2, 64
  return models.create_model(cfg, 5)


def _random_params(seed):
  shapes = jax.eval_shape(_model().init, jax.random.key(0), _VIDEO)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def _apply():
  return jax.jit(lambda p, v: _model().apply({'params': p}, v))


def _write(path, state):
  with open(path, 'wb') as f:
    f.write(flax.serialization.to_bytes(state))
  return str(path)


def _assert_same_logits(restored, params):
  merged = merge.merge_params(_random_params(9), restored, source_name='scenic')
  expected = np.asarray(_apply()(params, _VIDEO))
  assert np.abs(expected).max() > 0  # A zero head would make the check vacuous.
  np.testing.assert_array_equal(np.asarray(_apply()(merged, _VIDEO)), expected)


def test_train_state_with_params(tmp_path):
  params = _random_params(0)
  path = _write(tmp_path / 'checkpoint_3', {
      'params': params, 'opt_state': {'mu': params, 'count': np.int32(3)},
      'global_step': 3, 'model_state': {}, 'rng': np.zeros(2, np.uint32)})
  _assert_same_logits(scenic.load_scenic_checkpoint(path), params)


def test_old_flax_optim_layout_and_newest_in_directory(tmp_path):
  old, new = _random_params(0), _random_params(1)
  _write(tmp_path / 'checkpoint_3', {'optimizer': {'target': old, 'state': {'step': 3}}})
  _write(tmp_path / 'checkpoint_10', {'optimizer': {'target': new, 'state': {'step': 10}}})
  (tmp_path / 'checkpoint_7.tmp').write_bytes(b'partial')  # An unfinished write: ignored.
  assert scenic.latest_checkpoint_file(str(tmp_path)).endswith('checkpoint_10')
  _assert_same_logits(scenic.load_scenic_checkpoint(tmp_path), new)


def test_bare_tree_variables_dict_and_in_memory_state(tmp_path):
  params = _random_params(2)
  restored = scenic.load_scenic_checkpoint(_write(tmp_path / 'bare', {'params': params}))
  _assert_same_logits(restored, params)
  restored = scenic.load_scenic_checkpoint(_write(tmp_path / 'vars', params))
  _assert_same_logits(restored, params)
  restored = scenic.load_scenic_checkpoint({'params': {'params': params}, 'global_step': 1})
  _assert_same_logits(restored, params)


def test_orbax_directory_written_by_newer_flax(tmp_path):
  params = _random_params(3)
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(str(tmp_path / 'checkpoint_5'), {'params': params, 'global_step': 5})
  restored = scenic.load_scenic_checkpoint(tmp_path)
  np.testing.assert_array_equal(restored['embedding']['kernel'], params['embedding']['kernel'])


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='Scenic checkpoint .*/nope does not exist'):
    scenic.load_scenic_checkpoint(tmp_path / 'nope')
  os.mkdir(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match=r'No flax checkpoint \(checkpoint_<step>\) in '
                     r'directory .*/empty'):
    scenic.load_scenic_checkpoint(tmp_path / 'empty')
  (tmp_path / 'junk').write_bytes(b'\xc1\xc1 not msgpack')
  with pytest.raises(ValueError, match='junk is not a flax msgpack checkpoint'):
    scenic.load_scenic_checkpoint(tmp_path / 'junk')
  path = _write(tmp_path / 'other', {'step': 3, 'weights': {'w': np.zeros(2)}})
  with pytest.raises(ValueError, match=r"other: no ViViT parameters found; top-level keys are "
                     r"\['step', 'weights'\]"):
    scenic.load_scenic_checkpoint(path)
