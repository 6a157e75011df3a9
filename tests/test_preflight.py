"""vivit_adapter.preflight: a run's start-up checks (values, data, init checkpoint)."""

import pytest

from data_pipelines import dmvr_format
from vivit_adapter import config_loading
from vivit_adapter import preflight

EXPERIMENT = '''
from vivit_adapter import configs

def get_config():
  config = configs.base_config()
  config.model.hidden_size = 48
  return config
'''


@pytest.fixture
def experiment(tmp_path):
  path = tmp_path / 'exp.py'
  path.write_text(EXPERIMENT)
  return str(path)


def _data(tmp_path):
  prefix = str(tmp_path / 'train.tfrecord')
  with dmvr_format.ShardedWriter(prefix, 2) as writer:
    writer.write(b'x')
    writer.write(b'y')
  return str(tmp_path)


def test_check_run_inputs(experiment, tmp_path):
  config = config_loading.load_config(experiment, [f'dataset.base_dir={tmp_path}'])
  with pytest.raises(FileNotFoundError, match=r'matches no file\. Convert videos with'):
    preflight.check_run_inputs(config)
  _data(tmp_path)
  preflight.check_run_inputs(config)  # data present, no init checkpoint: fine
  missing = str(tmp_path / 'stage1_run')
  config = config_loading.load_config(experiment, [
      f'dataset.base_dir={tmp_path}', 'stage=stage2',
      f'init_from.checkpoint_path={missing}'])
  with pytest.raises(FileNotFoundError) as e:
    preflight.check_run_inputs(config)
  assert str(e.value) == (f'config.init_from.checkpoint_path={missing!r} does not exist. '
                          'Train stage 1 first (with that --workdir), or set '
                          '--config.init_from.checkpoint_path.')
  config = config_loading.load_config(experiment, [
      f'dataset.base_dir={tmp_path}', 'dataset.num_frames=7'])
  with pytest.raises(ValueError, match=r'config\.dataset\.num_frames=7 must be a multiple'):
    preflight.check_run_inputs(config)


def test_bad_value_fails_before_the_data_is_looked_for(experiment, tmp_path):
  config = config_loading.load_config(experiment, [
      f'dataset.base_dir={tmp_path / "none"}', 'model.adapter.type=lstm'])
  with pytest.raises(ValueError, match=r"config.model.adapter.type='lstm'; expected one of "
                     r"\('attention', 'mlp', 'none'\)"):
    preflight.check_run_inputs(config)
