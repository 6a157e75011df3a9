"""Every experiment file loads the way the CLI loads it, validates, and stays short."""

import glob
import itertools
import json
import os

import jax
import jax.numpy as jnp
import pytest

from vivit_adapter import config_loading
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.models import variants
from vivit_adapter.train_lib import startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(p for p in glob.glob(os.path.join(REPO, 'experiments', '*.py'))
                     if os.path.basename(p) != '__init__.py')
NAMES = [os.path.basename(p)[:-3] for p in EXPERIMENTS]
EXPECTED = {f'{d}_{s}' for d in ('synthetic', 'mini64', 'k400', 'ssv2')
            for s in ('stage1', 'stage2', 'baseline')}


def _load(name, overrides=()):
  return config_loading.load_config(os.path.join(REPO, 'experiments', f'{name}.py'),
                                    overrides)


def test_every_expected_experiment_exists():
  assert EXPECTED <= set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_loads_locked_and_valid(name):
  config = _load(name)
  assert config.is_locked
  startup.check_config(config)
  assert config.experiment_name == name
  with pytest.raises(AttributeError):
    config.model.hiden_size = 3  # the lock holds in experiment files too


@pytest.mark.parametrize('name', NAMES)
def test_short_and_composed_from_the_base(name):
  with open(os.path.join(REPO, 'experiments', f'{name}.py')) as f:
    text = f.read()
  assert len(text.splitlines()) < 60
  assert 'configs.base_config()' in text and 'recipes.' in text


def test_files_do_not_repeat_each_other():
  """No code line beyond the shared skeleton appears in two experiment files."""
  skeleton = {'from vivit_adapter import configs', 'from vivit_adapter import recipes',
              'def get_config():', 'config = configs.base_config()', 'return config',
              'config.model.spatial_chunk_size = 4'}
  def code(path):
    with open(path) as f:
      body = f.read().split('"""', 2)[2]  # after the docstring
    return {line.strip() for line in body.splitlines()
            if line.strip() and not line.strip().startswith('#')} - skeleton
  for a, b in itertools.combinations(EXPERIMENTS, 2):
    shared = code(a) & code(b) - {line for line in code(a) if line.startswith('recipes.')}
    assert not shared, (a, b, shared)


@pytest.mark.parametrize('dataset', ['synthetic', 'mini64', 'k400', 'ssv2'])
def test_stages_differ_only_where_the_method_says(dataset):
  s1, s2, base = (_load(f'{dataset}_{s}') for s in ('stage1', 'stage2', 'baseline'))
  assert (s1.stage, s2.stage, base.stage) == ('stage1', 'stage2', 'baseline')
  assert s1.dataset.num_frames == 8
  assert s2.dataset.num_frames == base.dataset.num_frames == 32
  # The frozen tubelet embedding must see the frame spacing stage 1 trained it on.
  assert s1.dataset.stride == s2.dataset.stride == base.dataset.stride
  assert not s1.model.freeze_spatial and not base.model.freeze_spatial
  assert s1.model.adapter.type == base.model.adapter.type == 'none'
  assert s2.model.freeze_spatial and s2.model.adapter.type == 'attention'
  assert s2.init_from.checkpoint_path == f'runs/{dataset}_stage1'
  assert s2.init_from.checkpoint_format == 'workdir' and s2.init_from.restore_temporal
  assert s1.model.to_dict() == base.model.to_dict()
  assert s1.dataset.base_dir == s2.dataset.base_dir == base.dataset.base_dir


def test_synthetic_is_tiny_and_never_flips():
  for s in ('stage1', 'stage2', 'baseline'):
    c = _load(f'synthetic_{s}')
    assert c.dataset.base_dir == 'data/synthetic' and not c.dataset.flip
    assert c.model.hidden_size <= 96 and c.dataset.crop_size == 32
    assert c.model.spatial_transformer.num_layers <= 6
    assert c.optimizer == 'adamw' and 16 <= c.batch_size <= 32


def test_mini64_is_the_synthetic_recipe_at_64_px():
  """64 tokens per frame (the spatial encoder dominates the step), else the same model."""
  for s in ('stage1', 'stage2', 'baseline'):
    c, small = _load(f'mini64_{s}'), _load(f'synthetic_{s}')
    assert c.dataset.base_dir == 'data/mini64' and not c.dataset.flip
    ds = c.dataset
    assert (ds.min_resize, ds.crop_size, ds.min_scale, ds.max_scale, ds.stride) == (
        64, 64, 1.0, 1.0, 2)
    assert c.model.to_dict() == small.model.to_dict()
    assert c.model.patches.size == (8, 8, 2) and c.model.hidden_size == 64
    assert (c.batch_size, c.eval_batch_size, c.lr_configs.base_learning_rate) == (
        16, 32, 3e-3)
    assert (c.optimizer, c.optimizer_configs.weight_decay, c.lr_configs.warmup_steps) == (
        'adamw', 0.05, 50)
  assert [_load(f'mini64_{s}').num_training_steps for s in ('stage1', 'stage2', 'baseline')
          ] == [600, 2400, 1200]


def test_k400_is_scenics_recipe():
  c = _load('k400_baseline')
  assert c.model.variant == 'B/16x2' and c.model.hidden_size == 768
  ds = c.dataset
  assert (ds.num_frames, ds.stride, ds.crop_size, ds.min_resize) == (32, 2, 224, 256)
  assert (ds.num_classes, ds.train_table, ds.eval_table, ds.test_table) == (
      400, 'train.tfrecord@*', 'validation.tfrecord@*', 'test.tfrecord@*')
  assert (c.optimizer, c.optimizer_configs.momentum, c.lr_configs.base_learning_rate) == (
      'momentum', 0.9, 0.05)
  assert (c.lr_configs.schedule, c.lr_configs.warmup_epochs, c.num_training_epochs) == (
      'cosine', 2.5, 30.0)
  assert (c.batch_size, c.max_grad_norm) == (64, 1.0)
  assert _load('k400_stage2').model.spatial_chunk_size == 4


def test_ssv2_is_scenics_recipe():
  c = _load('ssv2_baseline')
  ds = c.dataset
  assert (ds.num_classes, ds.flip, ds.stride, ds.crop_size) == (174, False, 1, 256)
  assert (c.label_smoothing, c.mixup.alpha, c.model.stochastic_droplayer_rate) == (
      0.3, 0.3, 0.3)
  assert (c.lr_configs.base_learning_rate, c.num_training_epochs) == (0.4, 35.0)
  assert ds.test_table == ds.eval_table


def test_overrides_apply_and_typos_fail_with_their_name():
  c = _load('k400_stage2', ['dataset.num_frames=64', '--config.model.patches.size=(8,8,4)'])
  assert c.dataset.num_frames == 64 and c.model.patches.size == (8, 8, 4)
  with pytest.raises(config_loading.ConfigError,
                     match=r"--config\.modle\.hidden_size: unknown config key: config has "
                           r"no field 'modle' \(did you mean 'model'\?\)"):
    _load('synthetic_stage1', ['--config.modle.hidden_size=3'])


@pytest.mark.parametrize('name', NAMES)
def test_saved_config_round_trips(name, tmp_path):
  """What the trainer saves is what predict and later stages read back."""
  config = _load(name)
  configs.save(config, str(tmp_path))
  assert configs.load_saved(str(tmp_path)).to_dict() == config.to_dict()


def _model_key(model_config, dotted):
  for part in dotted.split('.'):
    model_config = model_config[part]
  return model_config


@pytest.mark.parametrize('name', NAMES)
def test_a_variant_is_expanded_when_the_experiment_is_loaded(name):
  """The size fields hold the variant's sizes: nothing resolves the variant later."""
  model = _load(name).model
  if model.variant:
    for key, value in variants.parse_variant(model.variant).items():
      assert _model_key(model, key) == value, (name, key)


def test_an_explicit_size_beats_the_experiments_variant(tmp_path):
  config = _load('k400_stage1', ['model.hidden_size=384',
                                 'model.spatial_transformer.num_layers=1',
                                 'model.temporal_transformer.num_layers=1'])
  assert config.model.variant == 'B/16x2' and config.model.hidden_size == 384
  module = models.create_model(config.model, config.dataset.num_classes)
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 32, 32, 3))))
  params = shapes['params']
  assert params['embedding']['kernel'].shape == (2, 16, 16, 3, 384)
  assert sorted(k for k in params['SpatialTransformer'] if k.startswith('encoderblock')) == [
      'encoderblock_0']
  with open(configs.save(config, str(tmp_path))) as f:
    saved = json.load(f)['model']
  assert (saved['hidden_size'], saved['spatial_transformer']['num_layers']) == (384, 1)
  assert configs.load_saved(str(tmp_path)).model.to_dict() == config.model.to_dict()
