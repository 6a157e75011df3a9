"""vivit_adapter.train_lib.startup: a run's start-up checks (values, data, init checkpoint)."""

import pytest

from data_pipelines import dmvr_format
from vivit_adapter import configs
from vivit_adapter.train_lib import startup


def _config(tmp_path, **init_from):
  config = configs.base_config()
  config.dataset.base_dir = str(tmp_path)
  config.init_from.update(init_from)
  return config


def _data(tmp_path):
  prefix = str(tmp_path / 'train.tfrecord')
  with dmvr_format.ShardedWriter(prefix, 2) as writer:
    writer.write(b'x')
    writer.write(b'y')


def test_missing_data_names_every_missing_table_and_how_to_make_it(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    startup.check_run_inputs(_config(tmp_path))
  assert str(e.value) == (
      f"No training data in '{tmp_path}': no files for the tables train 'train.tfrecord@*', "
      "eval 'validation.tfrecord@*', test 'test.tfrecord@*'. " + dmvr_format.MAKE_DATA_HINT)
  prefix = str(tmp_path / 'validation.tfrecord')
  with dmvr_format.ShardedWriter(prefix, 1) as writer:
    writer.write(b'x')
  (tmp_path / 'test.tfrecord-00000-of-00001').write_bytes(
      (tmp_path / 'validation.tfrecord-00000-of-00001').read_bytes())
  with pytest.raises(FileNotFoundError) as e:  # train alone is missing: the reader's words
    startup.check_run_inputs(_config(tmp_path))
  assert str(e.value) == (f"Table '{tmp_path}/train.tfrecord@*' matches no file. "
                          + dmvr_format.MAKE_DATA_HINT)
  _data(tmp_path)
  startup.check_run_inputs(_config(tmp_path))  # data present, no init checkpoint: fine


def test_missing_init_checkpoint_of_stage2_says_train_stage1(tmp_path):
  _data(tmp_path)
  missing = str(tmp_path / 'stage1_run')
  config = _config(tmp_path, checkpoint_path=missing)
  config.stage = 'stage2'
  with pytest.raises(FileNotFoundError) as e:
    startup.check_run_inputs(config)
  assert str(e.value) == (f'config.init_from.checkpoint_path={missing!r} does not exist. '
                          'Train stage 1 first (with that --workdir), or set '
                          '--config.init_from.checkpoint_path.')


def test_bad_values_fail_before_the_data_is_looked_for(tmp_path):
  config = _config(tmp_path / 'none')
  config.dataset.num_frames = 7
  with pytest.raises(ValueError, match=r'config\.dataset\.num_frames=7 must be a multiple'):
    startup.check_run_inputs(config)
  config = _config(tmp_path / 'none')
  config.model.adapter.type = 'lstm'
  with pytest.raises(ValueError, match=r"config.model.adapter.type='lstm'; expected one of "
                     r"\('attention', 'mlp', 'none'\)"):
    startup.check_run_inputs(config)
