"""Tests for vivit_adapter.models.towers: the image-tower switches of the spatial encoder
(their numerics against the libraries are in test_checkpoints_towers.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import merge
from vivit_adapter.models import towers, variants
from vivit_adapter.train_lib import startup

from tests import helpers

TOWER_PARTS = ('pre_norm', 'registers', 'LayerScale_', 'MAPHead_0')


def _model(**overrides):
  cfg = helpers.tiny_model(configs.base_config().model, **overrides)
  return models.create_model(cfg, 3), cfg


def _video():
  return helpers.random_video((1, 4, 16, 16, 3))


def test_default_model_has_no_tower_parts_and_scenic_names():
  model, _ = _model()
  names = merge.flatten(helpers.abstract_params(model, _video()))
  assert not [n for n in names if any(p in n for p in TOWER_PARTS)]
  assert 'embedding/bias' in names and 'cls_SpatialTransformer' in names


def test_each_switch_adds_exactly_its_parameters():
  model, _ = _model(**{'patches.bias': False, 'spatial_transformer.pre_norm': True,
                       'spatial_transformer.layer_scale': True,
                       'spatial_transformer.num_registers': 3,
                       'spatial_transformer.pooling': 'map'})
  shapes = {k: v.shape for k, v in
            merge.flatten(helpers.abstract_params(model, _video())).items()}
  assert 'embedding/bias' not in shapes and 'cls_SpatialTransformer' not in shapes
  assert shapes['SpatialTransformer/pre_norm/scale'] == (32,)
  assert shapes['SpatialTransformer/registers'] == (1, 3, 32)
  assert shapes['SpatialTransformer/encoderblock_1/LayerScale_0/scale'] == (32,)
  assert shapes['SpatialTransformer/encoderblock_1/LayerScale_1/scale'] == (32,)
  assert shapes['SpatialTransformer/MAPHead_0/probe'] == (1, 1, 32)
  assert shapes['SpatialTransformer/MAPHead_0/MlpBlock_0/Dense_0/kernel'] == (32, 64)
  # The position embedding covers the patches only: registers have no position.
  assert shapes['SpatialTransformer/posembed_input/pos_embedding'] == (1, 16, 32)
  # The temporal encoder is scenic's whatever the spatial switches.
  assert not [k for k in shapes if k.startswith('TemporalTransformer')
              and any(p in k for p in TOWER_PARTS)]


@pytest.mark.parametrize('adapter_tokens,rows', [('patches', 1 + 16), ('all', 1 + 2 + 16)])
def test_mean_pooling_readout_row_0_is_the_mean_of_the_patch_tokens(adapter_tokens, rows):
  model, _ = _model(**{'spatial_transformer.pooling': 'mean',
                       'spatial_transformer.num_registers': 2,
                       'spatial_transformer.adapter_tokens': adapter_tokens,
                       'adapter.type': 'attention'})
  params = helpers.perturbed_params(model, _video())
  tokens = np.asarray(helpers.run(model, params, _video(), part=models.FROZEN_PART))
  assert tokens.shape == (1, 2, rows, 32)
  np.testing.assert_allclose(tokens[..., 0, :], tokens[..., -16:, :].mean(axis=-2),
                             rtol=1e-5, atol=1e-6)


def test_token_pooling_without_registers_is_todays_model():
  """pooling='token' lays out [cls, patches]: the same tokens, parameters and logits as
  classifier='token' without a pooling."""
  video = _video()
  model, _ = _model(**{'adapter.type': 'attention'})
  tower_model, _ = _model(**{'adapter.type': 'attention',
                             'spatial_transformer.pooling': 'token'})
  params = helpers.perturbed_params(model, video)
  np.testing.assert_array_equal(helpers.run(model, params, video),
                                helpers.run(tower_model, params, video))


def test_activations_against_their_formulas():
  x = np.linspace(-4, 4, 17).astype(np.float32)
  exact = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
  tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
          for v in x]
  quick = [v / (1 + math.exp(-1.702 * v)) for v in x]
  for name, want in (('gelu', exact), ('gelu_tanh', tanh), ('quick_gelu', quick)):
    np.testing.assert_allclose(towers.ACTIVATIONS[name](jnp.asarray(x)), want, rtol=1e-5,
                               atol=1e-6, err_msg=name)


def test_layer_scale_multiplies_each_channel():
  scale = jnp.asarray([2.0, -1.0, 0.5])
  y = towers.LayerScale().apply({'params': {'scale': scale}}, jnp.ones((2, 4, 3)))
  np.testing.assert_array_equal(y, jnp.broadcast_to(scale, (2, 4, 3)))


@pytest.mark.parametrize('key,value,message', [
    ('mlp_activation', 'relu', "config.model.spatial_transformer.mlp_activation='relu'; "
     "expected one of ('gelu_tanh', 'gelu', 'quick_gelu')."),
    ('pooling', 'cls', "config.model.spatial_transformer.pooling='cls'; expected one of "
     "('', 'token', 'mean', 'map')."),
    ('layer_norm_epsilon', 0.0,
     'config.model.spatial_transformer.layer_norm_epsilon=0.0 must be positive.'),
    ('num_registers', 4, 'config.model.spatial_transformer.num_registers=4 needs '
     "config.model.spatial_transformer.pooling set ('token', 'mean' or 'map'), which "
     "says what a frame's vector is."),
])
def test_validate_names_the_key(key, value, message):
  config = helpers.tiny_config()
  config.model.spatial_transformer[key] = value
  with pytest.raises(ValueError) as e:
    startup.check_config(config)
  assert str(e.value) == message


def test_tower_variants_set_sizes_and_switches():
  fields = variants.parse_variant('SigLIP-So400m/14x2')
  assert fields['hidden_size'] == 1152 and fields['spatial_transformer.num_layers'] == 27
  assert fields['spatial_transformer.mlp_dim'] == 4304
  assert fields['spatial_transformer.pooling'] == 'map'
  clip = variants.parse_variant('CLIP-L/14x2')
  assert (clip['hidden_size'], clip['patches.size']) == (1024, (14, 14, 2))
  assert clip['spatial_transformer.mlp_activation'] == 'quick_gelu'
  assert clip['patches.bias'] is False and clip['spatial_transformer.pre_norm'] is True
  assert variants.parse_variant('OpenCLIP-B/16x2')['spatial_transformer.mlp_activation'] == 'gelu'
  assert variants.parse_variant('DINOv2reg-S/14x2')['spatial_transformer.num_registers'] == 4
  # A plain variant writes sizes only, so an experiment's switches survive it.
  assert not set(variants.parse_variant('B/16x2')) & set(variants.TOWER_KEYS)


def test_tower_variant_over_another_resets_every_switch():
  model = configs.base_config().model
  variants.apply_variant(model, 'DINOv2reg-B/14x2')
  variants.apply_variant(model, 'SigLIP-B/16x2')
  assert model.spatial_transformer.num_registers == 0
  assert model.spatial_transformer.layer_scale is False
  assert model.spatial_transformer.pooling == 'map'


def test_unknown_tower_is_named():
  with pytest.raises(ValueError, match=r"Unknown model variant 'EVA-B/16x2'.*TOWER one of"):
    variants.parse_variant('EVA-B/16x2')


def test_map_pooled_gap_model_trains_end_to_end():
  """A SigLIP-like spatial encoder under a 'gap' temporal encoder: finite gradients that
  reach the MAP head (it is part of the spatial encoder when nothing is frozen)."""
  model, _ = _model(**{'classifier': 'gap', 'spatial_transformer.pooling': 'map',
                       'head_kernel_init': 'lecun_normal'})
  video = _video()
  params = helpers.init(model, video)
  grads = jax.grad(lambda p: jnp.sum(model.apply({'params': p}, video) ** 2))(params)
  probe = grads['SpatialTransformer']['MAPHead_0']['probe']
  assert np.all(np.isfinite(probe)) and float(jnp.max(jnp.abs(probe))) > 0


@pytest.mark.parametrize('pooling,registers', [('map', 0), ('token', 2), ('mean', 2)])
def test_the_dial_splits_a_tower_encoder_into_parts_that_compose_to_the_whole(pooling,
                                                                              registers):
  # Registers and pre-norm come after the position embedding (below the dial); the
  # encoder norm and the tower's readout (MAP head, mean) are above it: a cache taken
  # below the dial holds the registers' tokens, and the trainable part reads them out.
  model, _ = _model(freeze_spatial=True, trainable_spatial_layers=1,
                    **{'spatial_transformer.pooling': pooling,
                       'spatial_transformer.num_registers': registers,
                       'spatial_transformer.pre_norm': True,
                       'spatial_transformer.layer_scale': True,
                       'adapter.type': 'mlp'})
  video = _video()
  params = jax.tree.map(
      lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape, p.dtype),
      helpers.init(model, video))
  frozen = model.apply({'params': params}, video, part='frozen')
  cls = int(pooling == 'token')
  assert frozen.shape == (1, 2, cls + registers + 16, 32)  # every token after layer 0
  whole = model.apply({'params': params}, video)
  split = model.apply({'params': params}, frozen, part='trainable')
  np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=1e-5, atol=1e-6)
