"""train_lib.workdir_guard: a workdir with checkpoints is only continued by a config that
can continue them, decided before anything is written."""

import errno
import os

import pytest

from data_pipelines import cli
from tests import helpers
from vivit_adapter import configs
from vivit_adapter.train_lib import trainer
from vivit_adapter.train_lib import workdir_guard


def _trained_workdir(tmp_path, **overrides):
  """config.json of a tiny run and a checkpoint directory: what a trained run leaves."""
  workdir = str(tmp_path / 'run')
  os.makedirs(os.path.join(workdir, 'checkpoints', '6'))
  os.makedirs(os.path.join(workdir, 'checkpoints', '9.orbax-checkpoint-tmp-1'))
  config = helpers.tiny_config(**overrides)
  configs.save(config, workdir)
  return workdir, config


def _saved_bytes(workdir):
  with open(os.path.join(workdir, configs.CONFIG_FILE), 'rb') as f:
    return f.read()


def test_a_parameter_shape_change_is_refused_naming_keys_and_values(tmp_path):
  workdir, _ = _trained_workdir(tmp_path)
  before = _saved_bytes(workdir)
  changed = helpers.tiny_config(**{'model.hidden_size': 64, 'dataset.num_frames': 16,
                                   'num_training_steps': 9})
  with pytest.raises(cli.ConfigError) as e:
    workdir_guard.check_workdir(changed, workdir, allow_config_change=True)
  assert str(e.value) == (
      f'--workdir={workdir} holds checkpoints of another model; this config changes what '
      'they were trained with: dataset.num_frames: 8 in config.json, 16 now; '
      'model.hidden_size: 32 in config.json, 64 now. Use a new --workdir for this config; '
      'the checkpoints there are untouched.')
  assert _saved_bytes(workdir) == before


def test_other_run_changes_need_the_flag_bookkeeping_does_not(tmp_path, caplog):
  workdir, _ = _trained_workdir(tmp_path, num_training_steps=6)
  more = helpers.tiny_config(num_training_steps=40, log_summary_steps=7)
  with pytest.raises(cli.ConfigError, match=r'holds checkpoints of a run with other '
                     r'settings: num_training_steps: 6 in config.json, 40 now\. Pass '
                     r'--allow_config_change'):
    workdir_guard.check_workdir(more, workdir)
  workdir_guard.check_workdir(more, workdir, allow_config_change=True)
  assert 'num_training_steps: 6 in config.json, 40 now' in caplog.text
  moved = helpers.tiny_config(num_training_steps=6, **{
      'dataset.base_dir': '/elsewhere', 'feature_cache.dir': '/cache', 'checkpoint_steps': 5,
      'init_from.checkpoint_path': '/stage1'})
  workdir_guard.check_workdir(moved, workdir)  # where the data lives, how often to save


def test_nothing_to_protect_without_checkpoints(tmp_path):
  workdir = str(tmp_path / 'fresh')
  os.makedirs(workdir)
  configs.save(helpers.tiny_config(), workdir)  # a start that never saved a checkpoint
  workdir_guard.check_workdir(helpers.tiny_config(**{'model.hidden_size': 64}), workdir)


def test_a_file_is_not_a_workdir(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(cli.ConfigError, match=f'--workdir={path} is a file, not a directory'):
    workdir_guard.check_workdir(helpers.tiny_config(), str(path))


def test_an_unwritable_workdir_fails_at_once_with_io_error():
  # /sys refuses new entries even to root (tests may run as root, where chmod does not).
  with pytest.raises(OSError) as e:
    workdir_guard.probe_writable('/sys/vivit_adapter_test_run')
  assert e.value.errno in (errno.EPERM, errno.EACCES)
  assert cli.exit_code(e.value) == cli.IO_ERROR
  assert cli.message(e.value).startswith(
      '/sys/vivit_adapter_test_run: cannot write to --workdir (')


def test_the_trainer_refuses_before_writing_anything(tmp_path):
  workdir, _ = _trained_workdir(tmp_path)
  before = sorted(os.listdir(workdir)), _saved_bytes(workdir)
  with pytest.raises(cli.ConfigError, match='model.hidden_size: 32 in config.json, 48 now'):
    trainer.train_and_evaluate(helpers.tiny_config(**{'model.hidden_size': 48}), workdir)
  assert (sorted(os.listdir(workdir)), _saved_bytes(workdir)) == before


def _fake_stage1(directory, config, num_classes):
  """A stage-1 workdir as the trainer leaves it (config.json, an orbax checkpoint),
  with freshly initialised parameters: no training needed to test a start."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from vivit_adapter import models  # pylint: disable=g-import-not-at-top
  model = models.create_model(config.model, num_classes)
  video = jax.ShapeDtypeStruct((1, config.dataset.num_frames, config.dataset.crop_size,
                                config.dataset.crop_size, 3), np.float32)
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), video)['params']
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  os.makedirs(directory)
  configs.save(config, directory)
  with ocp.CheckpointManager(f'{directory}/checkpoints', item_names=('params', 'state', 'meta'),
                             options=ocp.CheckpointManagerOptions(create=True)) as mngr:
    mngr.save(6, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        state=ocp.args.StandardSave({'step': np.int64(6)}),
        meta=ocp.args.JsonSave({'step': 6})))
    mngr.wait_until_finished()


def test_a_stage2_start_from_a_stage1_of_other_sizes_leaves_nothing(tmp_path):
  from tests import trainer_utils as tu  # pylint: disable=g-import-not-at-top
  data = tu.make_dataset(tmp_path / 'data')
  stage1 = str(tmp_path / 'stage1')
  _fake_stage1(stage1, tu.tiny_config(data), num_classes=14)
  config = tu.tiny_config(data)
  helpers.set_keys(config, **{
      'stage': 'stage2', 'model.freeze_spatial': True, 'model.adapter.type': 'mlp',
      'init_from.checkpoint_path': stage1, 'dataset.num_frames': 16,
      'model.hidden_size': 48})
  workdir = str(tmp_path / 'stage2')
  with pytest.raises(cli.CheckpointMismatchError) as e:
    trainer.train_and_evaluate(config, workdir)
  assert str(e.value).splitlines()[0] == (
      f'The init checkpoint was trained with other model sizes: model.hidden_size: 32 in '
      f'{stage1}/config.json, 48 in this config. Make config.model match it, or train a '
      'new stage 1.')
  assert 'does not fit the model: 32 in the checkpoint where the model has 48' in str(e.value)
  assert len(str(e.value).splitlines()) < 15  # not one line per tensor
  assert os.listdir(workdir) == []  # no config.json, no empty checkpoints/
