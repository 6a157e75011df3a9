"""vivit_adapter.config_loading: experiment files, overrides, the variant override."""

from absl import flags
import pytest

from vivit_adapter import config_loading

EXPERIMENT = '''
from vivit_adapter import configs

def get_config(arg=None):
  config = configs.base_config()
  config.model.hidden_size = 48
  if arg:
    config.experiment_name = arg
  return config
'''


@pytest.fixture
def experiment(tmp_path):
  path = tmp_path / 'exp.py'
  path.write_text(EXPERIMENT)
  return str(path)


def test_load_config_applies_file_then_overrides_in_order(experiment):
  config = config_loading.load_config(experiment)
  assert config.model.hidden_size == 48 and config.is_locked
  config = config_loading.load_config(
      experiment + ':named', ['model.hidden_size=24', '--config.dataset.flip=False',
                              '--config.model.patches.size=(4, 4, 2)'])
  assert config.experiment_name == 'named'
  assert config.model.hidden_size == 24 and config.dataset.flip is False
  assert config.model.patches.size == (4, 4, 2)


@pytest.mark.parametrize('override, message', [
    ('typo=1', "--config.typo: unknown config key: config has no field 'typo'; every key is "
               'declared, with its default, in vivit_adapter/configs.py.'),
    ('model.hiden_size=3', "--config.model.hiden_size: unknown config key: config.model has "
                           "no field 'hiden_size' (did you mean 'hidden_size'?); every key "
                           'is declared, with its default, in vivit_adapter/configs.py.'),
    ('model.hidden_size.x=3', '--config.model.hidden_size.x: unknown config key: '
                              'config.model.hidden_size is a value, not a group of keys, so '
                              "it has no field 'x'."),
])
def test_unknown_keys_are_named(experiment, override, message):
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.load_config(experiment, [override])
  assert str(e.value) == message


def test_bad_value_is_absls_error(experiment):
  with pytest.raises(flags.IllegalFlagValueError, match='config.model.hidden_size=abc'):
    config_loading.load_config(experiment, ['model.hidden_size=abc'])


def test_missing_file_fails_at_load(tmp_path):
  path = str(tmp_path / 'nope.py')
  with pytest.raises(config_loading.ConfigError,
                     match=f'--config={path}: the experiment file does not exist'):
    config_loading.load_config(path)


def test_override_keys_and_declared_keys():
  argv = ['prog', '--config=x.py', '--config.a.b=1', '-config.c=2', '--noconfig.d',
          '--configx.e=3', '--workdir=w']
  assert config_loading.override_keys(argv) == ['a.b', 'c', 'd']
  assert config_loading.unknown_key_message('model.adapter.type') is None
  assert config_loading.unknown_key_message('model.patches.size[0]') is None
  assert "no field 'tpye'" in config_loading.unknown_key_message('model.adapter.tpye')


def test_variant_override_writes_its_sizes(experiment):
  config = config_loading.load_config(experiment, ['model.variant=L/16x2'])
  assert config.model.variant == 'L/16x2'
  assert config.model.hidden_size == 1024 and config.model.patches.size == (16, 16, 2)
  assert (config.model.spatial_transformer.num_layers,
          config.model.spatial_transformer.num_heads,
          config.model.temporal_transformer.mlp_dim) == (24, 16, 4096)


@pytest.mark.parametrize('order', [0, 1])
def test_an_explicit_size_beats_the_variant_override_in_any_order(experiment, order):
  overrides = ['model.variant=L/16x2', 'model.hidden_size=256',
               'model.spatial_transformer.num_layers=2']
  overrides = overrides if order == 0 else overrides[::-1]
  config = config_loading.load_config(experiment, overrides)
  assert config.model.hidden_size == 256
  assert config.model.spatial_transformer.num_layers == 2
  assert config.model.spatial_transformer.num_heads == 16  # from the variant


def test_without_a_variant_override_the_files_sizes_stay(experiment):
  config = config_loading.load_config(experiment, ['model.spatial_transformer.num_layers=3'])
  assert config.model.variant == '' and config.model.hidden_size == 48
  assert config.model.spatial_transformer.num_layers == 3


def test_unknown_variant_override_is_a_config_error(experiment):
  with pytest.raises(config_loading.ConfigError,
                     match=r"--config.model.variant: Unknown model variant 'X/16x2'"):
    config_loading.load_config(experiment, ['model.variant=X/16x2'])
