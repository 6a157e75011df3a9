"""Tests for vivit_adapter.checkpoints.merge."""

import jax
import numpy as np
import pytest

from data_pipelines import cli
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import merge


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {'embedding': {'kernel': rng.normal(size=(2, 3)).astype(np.float32),
                        'bias': rng.normal(size=(3,)).astype(np.float32)},
          'Adapter': {'up': {'kernel': np.zeros((3, 3), np.float32)}},
          'output_projection': {'kernel': rng.normal(size=(3, 5)).astype(np.float32)}}


def test_exact_copy_of_a_real_model_tree():
  cfg = configs.base_config().model
  cfg.hidden_size, cfg.patches.size = 16, (4, 4, 2)
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 1, 2, 32
  model = models.create_model(cfg, 3)
  video = jax.ShapeDtypeStruct((1, 4, 8, 8, 3), np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), video)['params']  # no compile
  rng = np.random.default_rng(0)
  target, source = (jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
                    for _ in range(2))
  merged = merge.merge_params(target, source, source_name='src.ckpt')
  flat_m, flat_s = merge.flatten(merged), merge.flatten(source)
  assert set(flat_m) == set(flat_s)
  for k in flat_s:
    np.testing.assert_array_equal(flat_m[k], flat_s[k])


def test_flat_source_and_dtype_follow_target():
  target = _tree(0)
  source = {k: v.astype(np.float64) for k, v in merge.flatten(_tree(1)).items()}
  merged = merge.merge_params(target, source, source_name='x')
  assert merged['embedding']['kernel'].dtype == np.float32
  np.testing.assert_allclose(merged['embedding']['kernel'], _tree(1)['embedding']['kernel'])


def test_every_mismatch_is_listed():
  target = _tree(0)
  source = merge.flatten(_tree(1))
  del source['Adapter/up/kernel'], source['embedding/bias']
  source['head/kernel'] = np.zeros((3, 7))
  source['pre_logits/bias'] = np.zeros((3,))
  source['embedding/kernel'] = np.zeros((4, 3))
  source['output_projection/kernel'] = np.zeros((3, 6))
  with pytest.raises(ValueError) as err:
    merge.merge_params(target, source, source_name='/ckpt/vit.npz')
  msg = str(err.value)
  assert msg.startswith('Checkpoint /ckpt/vit.npz does not fit the model: ')
  assert 'missing from the checkpoint (2)' in msg
  assert 'Adapter/up/kernel (3, 3)' in msg and 'embedding/bias (3,)' in msg
  assert 'unexpected in the checkpoint, not in the model (2)' in msg
  assert 'head/kernel (3, 7)' in msg and 'pre_logits/bias (3,)' in msg
  assert 'shape mismatch (2)' in msg
  assert 'embedding/kernel: checkpoint (4, 3) vs model (2, 3)' in msg
  assert 'output_projection/kernel: checkpoint (3, 6) vs model (3, 5)' in msg


def test_allow_missing_and_ignore_unexpected_exempt_only_their_names():
  target = _tree(0)
  source = merge.flatten(_tree(1))
  del source['Adapter/up/kernel']
  source['head/kernel'] = np.zeros((3, 7))
  merged = merge.merge_params(target, source, source_name='x', allow_missing=('Adapter',),
                              ignore_unexpected=('head|pre_logits',))
  np.testing.assert_array_equal(merged['Adapter']['up']['kernel'],
                                target['Adapter']['up']['kernel'])
  np.testing.assert_array_equal(merged['embedding']['bias'], _tree(1)['embedding']['bias'])
  assert 'head' not in merged
  # A prefix matches whole components only: 'Adapt' does not exempt 'Adapter/...'.
  with pytest.raises(ValueError, match='Adapter/up/kernel'):
    merge.merge_params(target, source, source_name='x', allow_missing=('Adapt',),
                       ignore_unexpected=('head',))


def test_keep_target_skips_shape_check_and_keeps_target_value():
  target = _tree(0)
  source = merge.flatten(_tree(1))
  source['output_projection/kernel'] = np.ones((3, 9))
  merged = merge.merge_params(target, source, source_name='x',
                              keep_target=('output_projection',))
  np.testing.assert_array_equal(merged['output_projection']['kernel'],
                                target['output_projection']['kernel'])
  np.testing.assert_array_equal(merged['embedding']['kernel'], _tree(1)['embedding']['kernel'])


def test_matches():
  assert merge.matches('Adapter/down/kernel', ['Adapter'])
  assert merge.matches('Adapter', ['Adapter'])
  assert not merge.matches('AdapterX/kernel', ['Adapter'])
  assert merge.matches('TemporalTransformer/encoderblock_1/x',
                       [r'TemporalTransformer/encoderblock_\d+'])
  assert not merge.matches('a/Adapter', ['Adapter'])


def test_account_lists_restored_fresh_and_unused_names():
  target = _tree(0)
  source = merge.flatten(_tree(1))
  del source['Adapter/up/kernel']
  source['head/kernel'] = np.zeros((3, 7))
  exempt = dict(allow_missing=('Adapter',), keep_target=('output_projection',))
  params = merge.merge_params(target, source, source_name='x', ignore_unexpected=('head',),
                              **exempt)
  merged = merge.account(params, target, source, keep_target=exempt['keep_target'],
                         notes=['a note'])
  assert merged.params is params
  assert sorted(merged.restored) == ['embedding/bias', 'embedding/kernel']
  assert sorted(merged.fresh) == ['Adapter/up/kernel', 'output_projection/kernel']
  assert merged.unused == ('head/kernel',)
  assert merged.notes == ('a note',)


def test_a_wrong_width_is_one_summary_line_before_capped_detail():
  def tree(width):
    layers = {f'block_{i}': {'kernel': np.zeros((width, width)), 'bias': np.zeros(width)}
              for i in range(30)}
    return {'embedding': {'kernel': np.zeros((2, 3, width))}, **layers}
  with pytest.raises(cli.CheckpointMismatchError) as err:
    merge.merge_params(tree(32), tree(64), source_name='/runs/s1/checkpoints/6')
  lines = str(err.value).splitlines()
  assert lines[0].startswith(
      'Checkpoint /runs/s1/checkpoints/6 does not fit the model: 64 in the checkpoint where '
      'the model has 32 (61 tensors, e.g. block_0/bias).')
  assert lines[1:3] == ['shape mismatch (61):', '  block_0/bias: checkpoint (64,) vs model (32,)']
  assert lines[-1] == '  ... and 53 more' and len(lines) == 11
