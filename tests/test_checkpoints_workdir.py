"""Tests for vivit_adapter.checkpoints.workdir: orbax round trip of the trainer's layout."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vivit_adapter.checkpoints import workdir


def _params(seed):
  rng = np.random.default_rng(seed)
  return {'embedding': {'kernel': rng.normal(size=(2, 4, 4, 3, 8)).astype(np.float32),
                        'bias': rng.normal(size=(8,)).astype(np.float32)},
          'cls_SpatialTransformer': rng.normal(size=(1, 1, 8)).astype(np.float32)}


def save_like_the_trainer(run_dir, steps):
  """Writes checkpoints exactly as the trainer does (Composite of params/state/meta)."""
  mngr = ocp.CheckpointManager(
      os.path.join(run_dir, 'checkpoints'), item_names=('params', 'state', 'meta'),
      options=ocp.CheckpointManagerOptions(max_to_keep=3, create=True))
  for step in steps:
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(_params(step)),
        state=ocp.args.StandardSave({'step': np.int32(step), 'mu': _params(step + 100)}),
        meta=ocp.args.JsonSave({'step': step, 'config': 'x'})))
  mngr.wait_until_finished()
  mngr.close()


def _assert_equal(restored, expected):
  assert set(restored) == set(expected)
  for k in ('kernel', 'bias'):
    assert isinstance(restored['embedding'][k], np.ndarray)
    np.testing.assert_array_equal(restored['embedding'][k], expected['embedding'][k])
  np.testing.assert_array_equal(restored['cls_SpatialTransformer'],
                                expected['cls_SpatialTransformer'])


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  save_like_the_trainer(path, (10, 20))
  return path


def test_latest_from_workdir_and_checkpoints_dir(run_dir):
  _assert_equal(workdir.restore_workdir_params(run_dir), _params(20))
  _assert_equal(workdir.restore_workdir_params(os.path.join(run_dir, 'checkpoints')),
                _params(20))
  assert workdir.find_checkpoint_step(run_dir) == (os.path.join(run_dir, 'checkpoints'), 20)


def test_given_step_and_step_directory(run_dir):
  _assert_equal(workdir.restore_workdir_params(run_dir, step=10), _params(10))
  step_dir = os.path.join(run_dir, 'checkpoints', '10')
  _assert_equal(workdir.restore_workdir_params(step_dir), _params(10))
  with pytest.raises(ValueError, match=r'checkpoints/10 is the checkpoint of step 10, but '
                     'step=20 was asked'):
    workdir.restore_workdir_params(step_dir, step=20)


def test_missing_step(run_dir):
  with pytest.raises(FileNotFoundError, match=r'No checkpoint of step 15 in .*checkpoints; '
                     r'it has steps \[10, 20\]'):
    workdir.restore_workdir_params(run_dir, step=15)


def test_empty_and_nonexistent(tmp_path):
  os.makedirs(tmp_path / 'run' / 'checkpoints')
  with pytest.raises(FileNotFoundError, match=f'No orbax checkpoint found in '
                     f'{tmp_path}/run/checkpoints'):
    workdir.restore_workdir_params(str(tmp_path / 'run'))
  with pytest.raises(FileNotFoundError, match='Checkpoint directory .*/absent does not exist'):
    workdir.restore_workdir_params(str(tmp_path / 'absent'))


def test_sharded_params_restore_as_numpy(tmp_path):
  # The trainer saves device arrays laid out on a mesh; restoring needs no mesh.
  mesh = jax.make_mesh((len(jax.devices()),), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  params = _params(1)
  sharded = dict(params, embedding={
      'kernel': params['embedding']['kernel'],
      'bias': jax.device_put(params['embedding']['bias'], sharding)})
  mngr = ocp.CheckpointManager(str(tmp_path / 'checkpoints'), item_names=('params',),
                               options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(sharded)))
  mngr.wait_until_finished()
  mngr.close()
  _assert_equal(workdir.restore_workdir_params(str(tmp_path)), params)


def test_a_file_is_not_a_run_directory(tmp_path):
  (tmp_path / 'f').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='/f is a file, not a run directory'):
    workdir.restore_workdir_params(str(tmp_path / 'f'))
