"""train_lib.startup: one start-up check per run whatever the entry; what it returns spares
the trainer a second one."""

import os

import pytest

from data_pipelines import dmvr_format
from tests import helpers
from vivit_adapter.train_lib import startup
from vivit_adapter.train_lib import trainer


def _config_with_data(tmp_path):
  """A tiny config whose training table exists (all the start-up check reads of it)."""
  with dmvr_format.ShardedWriter(str(tmp_path / 'train.tfrecord'), 2) as writer:
    writer.write(b'x')
    writer.write(b'y')
  return helpers.tiny_config(**{'dataset.base_dir': str(tmp_path), 'batch_size': 2})


class _SetupReached(Exception):
  """Raised by a stand-in for trainer.setup: the start-up check is behind us."""


def _reach_setup(config, workdir):
  raise _SetupReached(workdir)


def test_check_covers_exactly_what_it_checked(tmp_path):
  config, workdir = _config_with_data(tmp_path), str(tmp_path / 'run')
  checked = startup.check(config, workdir)
  assert os.listdir(workdir) == []  # the write probe leaves nothing behind
  assert checked.covers(config, workdir, False)
  assert not checked.covers(config, workdir, True)
  assert not checked.covers(config, str(tmp_path / 'other'), False)
  config.num_training_steps += 1
  assert not checked.covers(config, workdir, False)


def test_the_trainer_takes_a_check_instead_of_checking_again(tmp_path, monkeypatch):
  config, workdir = _config_with_data(tmp_path), str(tmp_path / 'run')
  checked = startup.check(config, workdir)
  calls = []
  check = startup.check
  monkeypatch.setattr(startup, 'check', lambda *args: calls.append(args) or check(*args))
  monkeypatch.setattr(trainer, 'setup', _reach_setup)
  with pytest.raises(_SetupReached):
    trainer.train_and_evaluate(config, workdir, checked=checked)
  assert calls == []
  with pytest.raises(_SetupReached):  # no check handed over: the trainer checks
    trainer.train_and_evaluate(config, workdir)
  assert calls == [(config, workdir, False)]
  config.num_training_steps += 1  # a config other than the checked one is checked again
  with pytest.raises(_SetupReached):
    trainer.train_and_evaluate(config, workdir, checked=checked)
  assert len(calls) == 2


def test_a_caller_that_did_not_check_gets_the_whole_check(tmp_path):
  """From Python, as from main: bad inputs stop the run before the workdir is made."""
  config = helpers.tiny_config(**{'dataset.base_dir': str(tmp_path / 'none')})
  with pytest.raises(FileNotFoundError, match=r'no files for the tables train .*Convert videos with'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  config.dataset.num_frames = 7
  with pytest.raises(ValueError, match=r'config\.dataset\.num_frames=7 must be a multiple'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
