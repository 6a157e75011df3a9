"""Tests for vivit_adapter.checkpoints.stage2: stage-1 model -> stage-2 model."""

import functools

import jax
import numpy as np
import pytest

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import merge, posemb, stage2
from vivit_adapter.models import names

_VIDEO = np.random.default_rng(1).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _model(adapter='none', width=32):
  cfg = configs.base_config().model
  cfg.hidden_size, cfg.patches.size = width, (4, 4, 2)
  cfg.adapter.type, cfg.adapter.hidden_size = adapter, 8
  cfg.freeze_spatial = adapter != 'none'
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 1, 2, 64  # 1 layer: quick to compile
  return models.create_model(cfg, 5)


def _random_params(adapter='none', frames=8, width=32, seed=0):
  """Random values everywhere (a 'trained' stage-1 model; no compile needed)."""
  video = jax.ShapeDtypeStruct((1, frames, 16, 16, 3), np.float32)
  shapes = jax.eval_shape(_model(adapter, width).init, jax.random.key(0), video)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def _apply(adapter):
  return jax.jit(_model(adapter).apply)


def _logits(adapter, params):
  return np.asarray(_apply(adapter)({'params': params}, _VIDEO))


@pytest.mark.parametrize('adapter', ['attention', 'mlp'])
def test_stage2_at_same_length_computes_the_stage1_model(adapter):
  stage1 = _random_params()
  target = jax.jit(_model(adapter).init)(jax.random.key(3), _VIDEO[:1])['params']
  params = stage2.stage1_to_stage2(stage1, target, source_name='stage1').params
  flat, flat1 = merge.flatten(params), merge.flatten(stage1)
  for k, v in flat1.items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)
  for k in flat:
    if k.startswith('Adapter/'):
      np.testing.assert_array_equal(flat[k], merge.flatten(target)[k])
  expected = _logits('none', stage1)
  assert np.abs(expected).max() > 1e-2
  np.testing.assert_allclose(_logits(adapter, params), expected, atol=1e-5)


def test_stage2_at_16_frames_interpolates_temporal_posemb():
  stage1 = _random_params()
  target = _random_params('attention', frames=16, seed=1)
  merged = stage2.stage1_to_stage2(stage1, target, source_name='stage1')
  params = merged.params
  pe = params['TemporalTransformer']['posembed_input']['pos_embedding']
  src = stage1['TemporalTransformer']['posembed_input']['pos_embedding']
  assert src.shape == (1, 1 + 4, 32) and pe.shape == (1, 1 + 8, 32)
  np.testing.assert_array_equal(
      pe, posemb.interpolate_temporal_posemb(src, 8, has_cls=True))
  np.testing.assert_array_equal(pe[:, 0], src[:, 0])
  np.testing.assert_array_equal(params['Adapter']['up']['kernel'],
                                target['Adapter']['up']['kernel'])
  assert merged.notes == ('TemporalTransformer/posembed_input/pos_embedding resampled '
                          '(1, 5, 32) -> (1, 9, 32)',)
  assert {k.split('/')[0] for k in merged.fresh} == {'Adapter'}
  assert set(merged.restored) == set(merge.flatten(stage1)) and not merged.unused


def test_keep_target_temporal():
  stage1, target = _random_params(), _random_params('mlp', frames=16, seed=1)
  merged = stage2.stage1_to_stage2(stage1, target, source_name='s1',
                                   keep_target=names.TEMPORAL_GROUP)
  params = merged.params
  # The kept temporal posemb was neither taken nor resampled: the log must not say so.
  assert merged.notes == ()
  assert {k.split('/')[0] for k in merged.fresh} == {
      'Adapter', 'TemporalTransformer', 'cls_TemporalTransformer'}
  np.testing.assert_array_equal(params['cls_TemporalTransformer'],
                                target['cls_TemporalTransformer'])
  np.testing.assert_array_equal(
      params['TemporalTransformer']['encoderblock_0']['LayerNorm_0']['scale'],
      target['TemporalTransformer']['encoderblock_0']['LayerNorm_0']['scale'])
  np.testing.assert_array_equal(params['embedding']['kernel'], stage1['embedding']['kernel'])


def test_mismatches_are_errors():
  with pytest.raises(ValueError, match=r'(?s)^Checkpoint s1 does not fit the model: 16 in the '
                     r'checkpoint where the model has 32 .*\n  SpatialTransformer/encoder_norm/'
                     r'bias: checkpoint \(16,\) vs model \(32,\)'):
    stage2.stage1_to_stage2(_random_params(width=16), _random_params('mlp'), source_name='s1')
  # A checkpoint that has an adapter cannot silently lose it.
  with pytest.raises(ValueError,
                     match=r'unexpected in the checkpoint.*\n(.*\n)*\s+Adapter/down/kernel'):
    stage2.stage1_to_stage2(_random_params('mlp'), _random_params(), source_name='s2')
