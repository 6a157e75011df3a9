"""vivit_adapter.configs and the start-up check: the named choices come from their owners
and are checked once."""

import re

import jax.numpy as jnp
import ml_collections
import pytest

from data_pipelines import reader
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import load
from vivit_adapter.checkpoints import vit_npz
from vivit_adapter.train_lib import optimizers
from vivit_adapter.train_lib import startup

# Declared string keys that take any text (names, paths, tables), not a fixed set.
FREE_TEXT = {
    'experiment_name', 'model.variant', 'init_from.checkpoint_path', 'dataset.base_dir',
    'dataset.train_table', 'dataset.eval_table', 'dataset.test_table', 'dataset.label_map',
    'dataset.tfds_name', 'dataset.tfds_data_dir', 'dataset.tfds_train_split',
    'dataset.tfds_eval_split', 'dataset.tfds_test_split', 'feature_cache.dir',
}


OPTIMIZER_KEYS = {'optimizer', 'lr_configs.schedule'}


def _string_keys(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _string_keys(value, f'{prefix}{key}.')
    elif isinstance(value, str):
      yield prefix + key


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _set(config, dotted, value):
  *groups, leaf = dotted.split('.')
  for part in groups:
    config = config[part]
  config[leaf] = value


def test_every_string_key_is_free_text_or_a_choice():
  """A new key with a fixed set of values fails here until choices() names its owner."""
  keys = set(_string_keys(configs.base_config()))
  assert FREE_TEXT <= keys
  # The optimizer's two keys are checked by their owner (configs does not import the
  # training library, which imports it).
  assert keys - FREE_TEXT == set(startup.choices()) | OPTIMIZER_KEYS


def test_every_default_is_one_of_its_choices():
  config = configs.base_config()
  for key, names in startup.choices().items():
    assert _get(config, key) in names, key
  startup.check_config(config)


def test_choices_are_the_owners_constants():
  table = startup.choices()
  assert table['model.classifier'] is models.CLASSIFIERS
  assert table['model.adapter.type'] is models.ADAPTER_TYPES
  assert table['model.dtype'] == tuple(models.DTYPES)
  assert table['model.head_kernel_init'] == tuple(models.HEAD_INITS)
  assert table['init_from.checkpoint_format'] is load.FORMATS
  assert table['init_from.kernel_init_method'] is vit_npz.KERNEL_INIT_METHODS
  assert table['dataset.name'] is reader.DATASET_NAMES
  assert table['dataset.normalization'] is models.NORMALIZATIONS
  assert table['stage'] is configs.STAGES
  assert table['init_from.missing_cls'] is vit_npz.MISSING_CLS


def _optimizer(name, schedule='cosine'):
  config = configs.base_config()
  config.optimizer, config.lr_configs.schedule = name, schedule
  return optimizers.make_optimizer(config, {'w': {'kernel': jnp.ones((2, 2))}}, (), 10, 100)


def test_optimizers_implement_exactly_the_listed_names():
  for name in optimizers.OPTIMIZERS:
    _optimizer(name)
  for schedule in optimizers.SCHEDULES:
    _optimizer('sgd', schedule)
  with pytest.raises(ValueError, match="config.optimizer='lion'"):
    _optimizer('lion')
  with pytest.raises(ValueError, match="config.lr_configs.schedule='step'"):
    _optimizer('sgd', 'step')


def test_the_start_up_checks_run_the_optimizer_owners_check():
  config = configs.base_config()
  config.optimizer = 'lion'
  with pytest.raises(ValueError, match=r"config.optimizer='lion'; expected one of "
                     r"\('momentum', 'adamw', 'sgd'\)"):
    startup.check_run_inputs(config)


def test_vit_npz_implements_exactly_the_listed_missing_cls():
  for name in vit_npz.MISSING_CLS:  # accepted: fails later, on the empty checkpoint
    with pytest.raises(ValueError, match='image ViT checkpoint lacks'):
      vit_npz.vit_to_vivit_spatial({}, {}, kernel_init_method='central_frame',
                                   source_name='x', missing_cls=name)
  with pytest.raises(ValueError, match="missing_cls='random'"):
    vit_npz.vit_to_vivit_spatial({}, {}, kernel_init_method='central_frame',
                                 source_name='x', missing_cls='random')


@pytest.mark.parametrize('key', sorted(startup.choices()))
def test_validate_names_a_bad_choice(key):
  config = configs.base_config()
  _set(config, key, 'not_a_choice')
  leaf = key.split('.')[-1]
  with pytest.raises(ValueError, match=rf"{leaf}='not_a_choice'.* one of"):
    startup.check_config(config)


def test_validate_runs_the_dataset_owners_checks():
  config = configs.base_config()
  config.dataset.min_resize = 100  # below crop_size=224: only reader.check_config knows
  with pytest.raises(ValueError, match=r'Invalid config.dataset: min_resize=100 must be >= '
                     'crop_size=224'):
    startup.check_config(config)


def _declaration_text(source_lines, leaf):
  """The line declaring `leaf` in configs.py and the comment lines just above it."""
  pattern = re.compile(rf"^\s*(?:\w+\.{leaf} = |'{leaf}': )")
  index = next(i for i, line in enumerate(source_lines) if pattern.match(line))
  start = index
  while source_lines[start - 1].strip().startswith('#'):
    start -= 1
  return '\n'.join(source_lines[start:index + 1])


def test_the_comments_in_configs_list_the_real_choices():
  with open(configs.__file__) as f:
    lines = f.read().splitlines()
  for key, names in startup.choices().items():
    if key == 'stage':
      continue  # declared beside STAGES itself
    text = _declaration_text(lines, key.split('.')[-1])
    assert all(f"'{name}'" in text for name in names), (key, names, text)
