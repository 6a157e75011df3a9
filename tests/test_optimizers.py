"""Tests for vivit_adapter.train_lib.optimizers: schedules, masks, the frozen split."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from vivit_adapter import configs
from vivit_adapter.train_lib import optimizers


def params_tree():
  return {
      'embedding': {'kernel': jnp.ones((2, 4, 4, 3, 8)), 'bias': jnp.ones((8,))},
      'cls_SpatialTransformer': jnp.ones((1, 1, 8)),
      'SpatialTransformer': {'encoder_norm': {'scale': jnp.ones((8,)), 'bias': jnp.ones((8,))},
                             'posembed_input': {'pos_embedding': jnp.ones((1, 5, 8))}},
      'TemporalTransformer': {'encoderblock_0': {'MlpBlock_0': {'Dense_0': {
          'kernel': jnp.ones((8, 16)), 'bias': jnp.ones((16,))}}}},
      'output_projection': {'kernel': jnp.ones((8, 3)), 'bias': jnp.ones((3,))},
  }


def config(**kw):
  c = configs.base_config()
  c.lr_configs.base_learning_rate = 1.0
  return helpers.set_keys(c, **kw)


def test_frozen_keys_only_when_freezing():
  p = params_tree()
  assert optimizers.frozen_keys(p, False) == ()
  assert set(optimizers.frozen_keys(p, True)) == {
      'embedding', 'cls_SpatialTransformer', 'SpatialTransformer'}
  counts = optimizers.count_params(p, optimizers.frozen_keys(p, True))
  assert counts == {'trainable': 8 * 16 + 16 + 8 * 3 + 3,
                    'frozen': 2 * 4 * 4 * 3 * 8 + 8 + 8 + 8 + 8 + 40}


def test_decay_mask_covers_weight_matrices_only():
  mask = optimizers.decay_mask(params_tree())
  assert mask['embedding']['kernel'] and mask['output_projection']['kernel']
  assert not mask['embedding']['bias'] and not mask['cls_SpatialTransformer']
  assert not mask['SpatialTransformer']['posembed_input']['pos_embedding']
  assert not mask['SpatialTransformer']['encoder_norm']['scale']


@pytest.mark.parametrize('kind', ['cosine', 'linear', 'constant'])
def test_schedule_warms_up_then_decays(kind):
  c = config(**{'lr_configs.schedule': kind, 'lr_configs.warmup_steps': 10})
  sched = optimizers.make_schedule(c, steps_per_epoch=10, total_steps=110)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 1.0, rtol=1e-6)
  mid = float(sched(60))
  expected = {'cosine': 0.5 * (1 + np.cos(np.pi * 0.5)), 'linear': 0.5, 'constant': 1.0}[kind]
  np.testing.assert_allclose(mid, expected, rtol=1e-5)


def test_warmup_epochs_convert_with_steps_per_epoch():
  c = config(**{'lr_configs.warmup_epochs': 2.5})
  sched = optimizers.make_schedule(c, steps_per_epoch=4, total_steps=100)
  np.testing.assert_allclose(float(sched(5)), 0.5, rtol=1e-6)  # warm-up of 10 steps


@pytest.mark.parametrize('name', ['momentum', 'adamw', 'sgd'])
def test_frozen_parameters_have_no_state_and_no_update(name):
  p = params_tree()
  frozen = optimizers.frozen_keys(p, True)
  c = config(optimizer=name, **{'optimizer_configs.weight_decay': 0.1,
                                'lr_configs.warmup_steps': 0})
  tx, _ = optimizers.make_optimizer(c, p, frozen, 10, 100)
  state = tx.init(p)
  state_size = sum(np.size(x) for x in jax.tree.leaves(state))
  trainable = optimizers.count_params(p, frozen)['trainable']
  per_param = {'momentum': 1, 'adamw': 2, 'sgd': 0}[name]
  # Moments for trainable parameters only (plus scalar step counters).
  assert per_param * trainable <= state_size <= per_param * trainable + 8
  grads = jax.tree.map(jnp.ones_like, p)
  updates, _ = tx.update(grads, state, p)
  for k in frozen:
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates[k]))
  assert np.abs(np.asarray(updates['output_projection']['kernel'])).max() > 0


def test_clipping_and_decoupled_weight_decay():
  p = {'w': {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.full((2,), 2.0)}}
  c = config(optimizer='sgd', max_grad_norm=1.0, **{
      'optimizer_configs.weight_decay': 0.5, 'lr_configs.schedule': 'constant',
      'lr_configs.warmup_steps': 0, 'lr_configs.base_learning_rate': 0.1})
  tx, _ = optimizers.make_optimizer(c, p, (), 1, 10)
  grads = {'w': {'kernel': jnp.full((2, 2), 3.0), 'bias': jnp.full((2,), 4.0)}}
  updates, _ = tx.update(grads, tx.init(p), p)
  norm = np.sqrt(4 * 9 + 2 * 16)
  # Clipped gradient, plus decay on the kernel only, both scaled by -lr.
  np.testing.assert_allclose(updates['w']['kernel'], -0.1 * (3.0 / norm + 0.5 * 2.0), rtol=1e-6)
  np.testing.assert_allclose(updates['w']['bias'], -0.1 * (4.0 / norm), rtol=1e-6)


def test_unknown_optimizer_and_schedule_fail_with_the_key():
  p = params_tree()
  with pytest.raises(ValueError, match="config.optimizer='lamb'"):
    optimizers.make_optimizer(config(optimizer='lamb'), p, (), 1, 10)
  with pytest.raises(ValueError, match="config.lr_configs.schedule='step'"):
    optimizers.make_schedule(config(**{'lr_configs.schedule': 'step'}), 1, 10)
  assert isinstance(optimizers.make_optimizer(config(), p, (), 1, 10)[0],
                    optax.GradientTransformation)


def test_the_dial_freezes_paths_inside_the_spatial_encoder():
  # 12 spatial blocks, k = 3: posemb and blocks 0-8 frozen; 9-11 and the norm train.
  # Paths match name by name: freezing encoderblock_1 leaves encoderblock_10 alone.
  leaf = lambda: np.zeros((2,))  # pylint: disable=unnecessary-lambda-assignment
  spatial = {f'encoderblock_{i}': {'b': leaf()} for i in range(12)}
  spatial.update(posembed_input={'pos_embedding': leaf()}, encoder_norm={'scale': leaf()})
  params = {'embedding': {'kernel': leaf()}, 'cls_SpatialTransformer': leaf(),
            'SpatialTransformer': spatial, 'output_projection': {'kernel': leaf()}}
  assert optimizers.frozen_keys(params, False, 3) == ()
  assert optimizers.frozen_keys(params, True) == (
      'embedding', 'cls_SpatialTransformer', 'SpatialTransformer')
  frozen = optimizers.frozen_keys(params, True, 3)
  assert sorted(frozen) == sorted(
      ['embedding', 'cls_SpatialTransformer', 'SpatialTransformer/posembed_input',
       *(f'SpatialTransformer/encoderblock_{i}' for i in range(9))])
  trainable, fixed = optimizers.split_params(params, frozen)
  assert sorted(trainable['SpatialTransformer']) == [
      'encoder_norm', 'encoderblock_10', 'encoderblock_11', 'encoderblock_9']
  assert 'encoderblock_1' in fixed['SpatialTransformer'] and 'output_projection' in trainable
  assert jax.tree.structure(optimizers.merge_params(fixed, trainable)) == jax.tree.structure(
      params)
  labels = optimizers.param_labels(params, frozen)
  assert labels['SpatialTransformer']['encoderblock_10']['b'] == optimizers.TRAINABLE
  assert labels['SpatialTransformer']['encoderblock_1']['b'] == optimizers.FROZEN
  assert optimizers.count_params(params, frozen) == {'trainable': 2 * 5, 'frozen': 2 * 12}
