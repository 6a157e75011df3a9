"""Tests for the pure step functions and losses (vivit_adapter.train_lib.steps / losses)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from tests.helpers import perturbed_params, random_video
from vivit_adapter import configs
from vivit_adapter.models import create_model
from vivit_adapter.train_lib import assembly, losses, optimizers, steps


def setup(freeze=False, optimizer='sgd', accumulation=1, lr=0.1, dtype='float32',
          pixels=False, **model_overrides):
  """A tiny model's state and jitted step, assembled as the trainer assembles them;
  `pixels`: uint8 video that the model normalises, as the trainer feeds it."""
  c = configs.base_config()
  c.optimizer = optimizer
  c.gradient_accumulation_steps = accumulation
  c.lr_configs.schedule, c.lr_configs.warmup_steps = 'constant', 0
  c.lr_configs.base_learning_rate = lr
  helpers.tiny_model(c.model, freeze_spatial=freeze, dtype=dtype,
                     **{'adapter.type': 'mlp' if freeze else 'none', **model_overrides})
  model = create_model(c.model, 5, c.dataset.normalization if pixels else '')
  video = random_video((4, 8, 16, 16, 3))
  if pixels:
    video = jnp.round((video + 1) * 127.5).astype(jnp.uint8)
  params = perturbed_params(model, video)
  parts = assembly.build(c, model, params, num_classes=5, steps_per_epoch=10,
                         total_steps=100)
  state = parts.init_state(params, jax.random.PRNGKey(0))
  step = jax.jit(parts.train_step)  # not donated: the tests reuse `state`
  batch = {'inputs': video, 'label': jnp.array([0, 1, 2, 3])}
  return model, state, step, batch, parts


def test_gradient_accumulation_equals_the_full_batch():
  _, state, full, batch, _ = setup(accumulation=1)
  _, _, accumulated, _, _ = setup(accumulation=2)
  s1, m1 = full(state, batch)
  s2, m2 = accumulated(state, batch)
  np.testing.assert_allclose(m2['loss'], m1['loss'], rtol=1e-5)
  np.testing.assert_allclose(m2['grad_norm'], m1['grad_norm'], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_steps_fit_a_fixed_batch_and_leave_frozen_params_alone():
  _, state, step, batch, _ = setup(freeze=True, optimizer='adamw', lr=3e-3)
  start = jax.tree.map(np.asarray, state.params)
  losses_seen = []
  for _ in range(15):
    state, metrics = step(state, batch)
    losses_seen.append(float(metrics['loss']))
  assert losses_seen[-1] < 0.5 * losses_seen[0], losses_seen
  assert int(state.step) == 15
  for k in optimizers.frozen_keys(start, True):
    for a, b in zip(jax.tree.leaves(start[k]), jax.tree.leaves(state.params[k])):
      np.testing.assert_array_equal(a, b)


def reference_stage2_step(model, tx, frozen):
  """The frozen stage-2 step as it was before the dial, written out: top-level names
  split the parameters, gradients of the trainable ones only (no dropout, no mixup)."""

  def step(params, opt_state, batch):
    trainable = {k: v for k, v in params.items() if k not in frozen}
    fixed = {k: v for k, v in params.items() if k in frozen}

    def loss_fn(t):
      logits = model.apply({'params': {**t, **fixed}}, batch['inputs'], train=True)
      targets = losses.one_hot_targets(batch['label'], 5)
      ones = jnp.ones(batch['label'].shape)
      return losses.weighted_cross_entropy(logits, targets, ones) / batch['label'].shape[0]

    grads = jax.grad(loss_fn)(trainable)
    full = {**grads, **jax.tree.map(jnp.zeros_like, fixed)}
    updates, opt_state = tx.update(full, opt_state, params)
    trained = optax.apply_updates(trainable, {k: updates[k] for k in trainable})
    return {**fixed, **trained}, opt_state

  return jax.jit(step)


def test_dial_zero_trains_bit_for_bit_as_the_frozen_stage2():
  model, state, step, batch, parts = setup(freeze=True, optimizer='adamw', lr=3e-3,
                                           trainable_spatial_layers=0)
  assert sorted(parts.frozen) == ['SpatialTransformer', 'cls_SpatialTransformer', 'embedding']
  reference = reference_stage2_step(model, parts.tx, parts.frozen)
  params, opt_state = state.params, state.opt_state
  for _ in range(3):
    state, _ = step(state, batch)
    params, opt_state = reference(params, opt_state, batch)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state.params),
                          jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_dial_trains_the_top_layers_and_leaves_the_frozen_ones_bit_identical():
  # k = 1 of 2 spatial layers, bfloat16 activations, chunked frozen pass, adamw.
  _, state, step, batch, parts = setup(
      freeze=True, optimizer='adamw', lr=3e-3, dtype='bfloat16', pixels=True,
      trainable_spatial_layers=1, spatial_chunk_size=2)
  assert sorted(parts.frozen) == ['SpatialTransformer/encoderblock_0',
                                  'SpatialTransformer/posembed_input',
                                  'cls_SpatialTransformer', 'embedding']
  start = jax.tree.map(np.asarray, state.params)
  for _ in range(3):
    state, _ = step(state, batch)
  end = jax.tree.map(np.asarray, state.params)
  trained, frozen = optimizers.split_params(end, parts.frozen)
  before, frozen_before = optimizers.split_params(start, parts.frozen)
  assert jax.tree.structure(frozen) == jax.tree.structure(frozen_before)
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)
  for name in ('encoderblock_1', 'encoder_norm'):
    moved = [np.abs(a - b).max() for a, b in zip(
        jax.tree.leaves(before['SpatialTransformer'][name]),
        jax.tree.leaves(trained['SpatialTransformer'][name]))]
    assert max(moved) > 0, name
  # No optimizer state for the frozen part: Adam's two moments cover the trained
  # parameters only.
  counts = optimizers.count_params(end, parts.frozen)
  moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
  assert counts['frozen'] > 0 and moments == 2 * counts['trainable']


def test_bfloat16_training_keeps_float32_state_and_lowers_the_loss():
  # Activations bfloat16; parameters, optimizer state and loss float32 (the update
  # would lose small steps in bfloat16).
  _, state, step, batch, _ = setup(optimizer='adamw', lr=3e-3, dtype='bfloat16', pixels=True)
  assert batch['inputs'].dtype == jnp.uint8
  losses_seen = []
  for _ in range(15):
    state, metrics = step(state, batch)
    losses_seen.append(float(metrics['loss']))
  assert metrics['loss'].dtype == jnp.float32
  floats = [x for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert losses_seen[-1] < 0.5 * losses_seen[0], losses_seen


def test_eval_step_counts_only_unmasked_examples():
  model, state, _, batch, _ = setup()
  fn = jax.jit(steps.make_eval_step(model, 5))
  mask = jnp.array([1.0, 1.0, 0.0, 1.0])
  out = fn(state.params, dict(batch, batch_mask=mask))
  logits = np.asarray(model.apply({'params': state.params}, batch['inputs']))
  keep = np.asarray(mask) > 0
  labels = np.asarray(batch['label'])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(out['loss'], -logp[keep, labels[keep]].sum(), rtol=1e-5)
  assert float(out['count']) == 3
  assert float(out['top1']) == float(np.sum(logits.argmax(-1)[keep] == labels[keep]))
  assert float(out['top5']) == 3  # 5 classes: every label is in the top 5


def test_test_step_averages_probabilities_over_views():
  model, state, _, batch, _ = setup()
  views = jnp.stack([batch['inputs'], batch['inputs'][:, ::-1], -batch['inputs']], axis=1)
  fn = jax.jit(steps.make_test_step(model))
  out = fn(state.params, {'inputs': views, 'label': batch['label'],
                          'batch_mask': jnp.ones(4)})
  probs = np.mean([jax.nn.softmax(model.apply({'params': state.params}, views[:, v]))
                   for v in range(3)], axis=0)
  assert float(out['top1']) == float(np.sum(probs.argmax(-1) == np.asarray(batch['label'])))
  assert float(out['count']) == 4


def test_label_smoothing_and_mixup_targets():
  t = losses.one_hot_targets(jnp.array([2]), 4, label_smoothing=0.2)
  np.testing.assert_allclose(t, [[0.05, 0.05, 0.85, 0.05]], rtol=1e-6)
  x = jnp.arange(4.0)[:, None]
  targets = jax.nn.one_hot(jnp.arange(4), 4)
  mx, mt = losses.mixup(jax.random.PRNGKey(0), x, targets, alpha=0.4)
  lam = float(mt[0, 0])
  np.testing.assert_allclose(mx[:, 0], lam * x[:, 0] + (1 - lam) * x[::-1, 0], rtol=1e-6)
  np.testing.assert_allclose(mt.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize('scores,label,k,expected', [
    ([0.0, 0.0, 0.0], 0, 1, 1.0),  # ties resolve to the lowest index, as argmax does
    ([0.0, 0.0, 0.0], 2, 1, 0.0),
    ([0.1, 0.5, 0.3], 2, 2, 1.0),
    ([0.1, 0.5, 0.3], 0, 2, 0.0),
])
def test_topk_correct(scores, label, k, expected):
  got = losses.topk_correct(jnp.array([scores]), jnp.array([label]), k, jnp.ones(1))
  assert float(got) == expected


def test_dial_step_on_four_devices_equals_one_device():
  # Data parallel as the trainer runs it (state replicated, batch split over the mesh):
  # the same update as on one device, the frozen layers untouched on every device.
  from vivit_adapter.train_lib import parallel  # pylint: disable=g-import-not-at-top
  # SGD: the update is linear in the gradient, so it shows the gradient's agreement
  # (Adam's first update, g / |g|, would amplify rounding in near-zero gradients).
  _, state, step, batch, parts = setup(freeze=True, optimizer='sgd', lr=0.1,
                                       trainable_spatial_layers=1)
  mesh = parallel.make_mesh()
  assert mesh.size == 4
  sharded = parts.init_state(parallel.replicate(jax.device_get(state.params), mesh),
                             state.rng, mesh)
  sharded, _ = parts.jit_step(mesh)(sharded, parallel.to_global(
      jax.device_get(batch), mesh))
  single, _ = step(state, batch)
  moved = 0.0
  for a, b, c in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params),
                     jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
    moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(c)).max()))
  assert moved > 1e-3  # the step did update the trained parameters
  _, frozen = optimizers.split_params(jax.device_get(sharded.params), parts.frozen)
  _, frozen_before = optimizers.split_params(jax.device_get(state.params), parts.frozen)
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)
