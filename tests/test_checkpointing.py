"""train_lib.checkpointing: a damaged or half-written checkpoint falls back to the one
before it; a checkpoint of another model is a mismatch, not damage."""

import glob
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from data_pipelines import cli
from tests import helpers
from vivit_adapter.train_lib import checkpointing



def _state(step: int, width: int = 4) -> helpers.TrainState:
  return helpers.TrainState(
      params={'embedding': {'kernel': jnp.full((2, width), float(step))}},
      opt_state={'mu': jnp.zeros((2, width))}, step=jnp.asarray(step),
      rng=jax.random.PRNGKey(0))


@pytest.fixture
def workdir(tmp_path):
  """A workdir with checkpoints of steps 1 and 2, saved as the trainer saves them."""
  workdir = str(tmp_path / 'run')
  manager = checkpointing.make_manager(workdir, max_to_keep=3)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))  # not before a save
  for step in (1, 2):
    checkpointing.save(manager, _state(step), {'data_states': [{'position': step}]})
  manager.wait_until_finished()
  manager.close()
  return workdir


def _restore(workdir, width=4):
  manager = checkpointing.make_manager(workdir, max_to_keep=3)
  try:
    return checkpointing.restore_latest(manager, _state(0, width))
  finally:
    manager.close()


def _damage(workdir, step):
  for path in glob.glob(f'{workdir}/checkpoints/{step}/params/**/d/*', recursive=True):
    with open(path, 'wb'):
      pass  # truncated to nothing, as a file system that lost the data would leave it


def test_damaged_latest_falls_back_to_the_previous_with_a_warning(workdir, caplog):
  _damage(workdir, 2)
  state, meta, step = _restore(workdir)
  assert step == 1 and float(state.params['embedding']['kernel'][0, 0]) == 1.0
  assert meta['data_states'] == [{'position': 1}]
  assert f'Checkpoint step 2 in {workdir}/checkpoints is damaged and was skipped' in (
      caplog.text)
  assert 'restoring the one before it' in caplog.text


def test_a_save_killed_midway_is_not_a_checkpoint(workdir):
  # kill -9 during a save leaves orbax's temporary directory, never a step directory.
  shutil.copytree(f'{workdir}/checkpoints/2', f'{workdir}/checkpoints/3.orbax-checkpoint-tmp-7')
  _damage(workdir, '3.orbax-checkpoint-tmp-7')
  _, _, step = _restore(workdir)
  assert step == 2


def test_all_damaged_is_an_error_that_keeps_the_checkpoints(workdir):
  _damage(workdir, 1)
  _damage(workdir, 2)
  with pytest.raises(cli.DataError, match=r'None of the checkpoints \[2, 1\] .* could be '
                     r'restored.*do not delete them'):
    _restore(workdir)
  assert sorted(os.listdir(f'{workdir}/checkpoints')) == ['1', '2']


def test_checkpoints_of_another_model_are_a_mismatch_with_a_summary(workdir):
  with pytest.raises(cli.CheckpointMismatchError) as e:
    _restore(workdir, width=8)
  first = str(e.value).splitlines()[0]
  assert first.startswith(f'Checkpoint {workdir}/checkpoints/2 does not fit the model: 4 in '
                          'the checkpoint where the model has 8 (1 tensor, e.g. '
                          'embedding/kernel). This workdir belongs to another config')
  assert 'embedding/kernel: checkpoint (2, 4) vs model (2, 8)' in str(e.value)


def test_preemption_watcher_turns_sigterm_and_sigint_into_a_flag():
  import signal  # pylint: disable=g-import-not-at-top
  before = {s: signal.getsignal(s) for s in checkpointing.PreemptionWatcher.SIGNALS}
  for sig in checkpointing.PreemptionWatcher.SIGNALS:
    with checkpointing.PreemptionWatcher() as watcher:
      os.kill(os.getpid(), sig)
      assert watcher.requested == signal.Signals(sig).name
  assert {s: signal.getsignal(s) for s in before} == before


def test_a_full_disk_during_a_save_is_an_io_error_and_keeps_the_others(workdir, monkeypatch):
  manager = checkpointing.make_manager(workdir, max_to_keep=3)

  def full(*args, **kwargs):
    # As TensorStore words it when the file system refuses the write.
    raise ValueError('Error writing "params/d/17": [OS error 28: No space left on device]')
  monkeypatch.setattr(manager, 'save', full)
  with pytest.raises(OSError) as e:
    checkpointing.save(manager, _state(3), {'data_states': [None]})
  manager.close()
  assert cli.exit_code(e.value) == cli.IO_ERROR
  assert cli.message(e.value).startswith(
      f'{workdir}/checkpoints: No space left on device while writing a checkpoint; free '
      'some space')
  _, _, step = _restore(workdir)
  assert step == 2
