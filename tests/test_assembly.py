"""Tests for vivit_adapter.train_lib.assembly: frozen split, optimizer, step and state."""

import jax
import jax.numpy as jnp
import numpy as np

from tests import helpers
from vivit_adapter import configs
from vivit_adapter.models import create_model
from vivit_adapter.train_lib import assembly, parallel, steps

SPATIAL = {'embedding', 'cls_SpatialTransformer', 'SpatialTransformer'}


def tiny(freeze=True):
  c = configs.base_config()
  helpers.tiny_model(c.model, freeze_spatial=freeze,
                     **{'adapter.type': 'mlp' if freeze else 'none'})
  c.dataset.num_frames, c.dataset.crop_size = 8, 16
  return c, create_model(c.model, 5)


def shapes(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def test_abstract_state_is_the_real_state_unallocated():
  config, model = tiny()
  params = assembly.init_params(config, model, jax.random.PRNGKey(0))
  abstract = assembly.abstract_params(config, model)
  assert shapes(abstract) == shapes(params)
  parts = assembly.build(config, model, abstract, num_classes=5, steps_per_epoch=10,
                         total_steps=100)
  state = parts.init_state(params, jax.random.PRNGKey(1))
  assert shapes(parts.abstract_state(abstract)) == shapes(state)
  assert all(isinstance(x, jax.ShapeDtypeStruct)
             for x in jax.tree.leaves(parts.abstract_state(abstract)))
  assert set(parts.frozen) == SPATIAL
  # Frozen parameters carry no optimizer state: besides the scalar schedule count,
  # there is one momentum buffer per trainable parameter and nothing else.
  trainable = {k: v for k, v in params.items() if k not in parts.frozen}
  buffers = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert sorted(map(str, shapes(buffers))) == sorted(
      map(str, shapes(jax.tree.leaves(trainable))))


def test_state_on_a_mesh_is_replicated_and_the_step_runs_there():
  config, model = tiny(freeze=False)
  mesh = parallel.make_mesh()
  params = assembly.init_params(config, model, jax.random.PRNGKey(0), mesh)
  parts = assembly.build(config, model, params, num_classes=5, steps_per_epoch=10,
                         total_steps=100)
  assert parts.frozen == ()
  state = parts.init_state(params, jax.random.PRNGKey(1), mesh)
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding == parallel.replicated(mesh), leaf.sharding
  batch = parallel.to_global({'inputs': np.zeros((4, 8, 16, 16, 3), np.float32),
                              'label': np.arange(4, dtype=np.int32)}, mesh)
  new_state, metrics = parts.jit_step(mesh)(state, batch)
  assert int(new_state.step) == 1
  np.testing.assert_allclose(float(metrics['loss']), np.log(5), rtol=1e-6)  # zero head


def test_step_factory_gets_the_built_optimizer_and_frozen_names():
  config, model = tiny()
  params = assembly.abstract_params(config, model)
  seen = {}

  def factory(cfg, mdl, tx, schedule, *, frozen, num_classes):
    seen.update(cfg=cfg, model=mdl, tx=tx, schedule=schedule, frozen=frozen,
                num_classes=num_classes)
    return lambda state, batch: (state.replace(step=state.step + 1), {})

  parts = assembly.build(config, model, params, num_classes=5, steps_per_epoch=10,
                         total_steps=100, step_factory=factory)
  assert seen == {'cfg': config, 'model': model, 'tx': parts.tx,
                  'schedule': parts.schedule, 'frozen': parts.frozen, 'num_classes': 5}
  state = steps.TrainState(step=jnp.int32(4), params={}, opt_state=(), rng=jnp.zeros(2))
  assert int(parts.jit_step()(state, {})[0].step) == 5
