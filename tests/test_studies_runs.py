"""The studies' shared pieces: reuse-or-train (studies.runs), experiments as modules."""

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from data_pipelines import cli
from vivit_adapter import config_loading
from vivit_adapter import configs
from vivit_adapter.studies import experiment_configs
from vivit_adapter.studies import runs
from tests import trainer_utils as tu
from vivit_adapter.train_lib import reporting
from vivit_adapter.train_lib import run_lock
from vivit_adapter.train_lib import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _summary(config, step=4, train_time_s=8.0):
  """What the trainer writes: the config through JSON (tuples become lists)."""
  return {'step': step, 'train_time_s': train_time_s, 'eval': {'top1': 0.5},
          'config': json.loads(json.dumps(config.to_dict()))}


@pytest.fixture
def fake_trainer(monkeypatch):
  """Replaces the trainer; records whether each call found its workdir already there."""
  calls = []

  def train_and_evaluate(config, workdir):
    # What the run's directory holds when training starts: the lock, held by this process.
    lock = os.path.join(workdir, run_lock.LOCK_FILE)
    calls.append((sorted(os.listdir(workdir)),
                  json.loads(open(lock).read())['pid'] if os.path.exists(lock) else None))
    history = reporting.History(workdir)
    history.add(2, 'eval', {'top1': 0.25, 'train_time_s': 3.0})
    history.add(4, 'eval', {'top1': 0.5, 'train_time_s': 8.0})
    reporting.write_summary(workdir, _summary(config))
    return _summary(config)
  monkeypatch.setattr(trainer, 'train_and_evaluate', train_and_evaluate)
  return calls


def test_eval_curve_uses_recorded_times_and_estimates_older_ones(tmp_path):
  rows = [{'step': 5, 'kind': 'train', 'loss': 1.0},
          {'step': 10, 'kind': 'eval', 'top1': 0.25, 'train_time_s': 3.5,
           'train_cpu_s': 3.0},
          {'step': 20, 'kind': 'eval', 'top1': 0.5}]  # written before times were recorded
  (tmp_path / reporting.HISTORY_FILE).write_text(''.join(json.dumps(r) + '\n' for r in rows))
  curve = runs.eval_curve(str(tmp_path), {'train_time_s': 8.0, 'train_cpu_s': 6.0,
                                          'step': 40})
  assert curve == [{'step': 10, 'top1': 25.0, 'train_time_s': 3.5, 'train_cpu_s': 3.0},
                   {'step': 20, 'top1': 50.0, 'train_time_s': 4.0, 'train_cpu_s': 3.0}]
  # A summary from before CPU time was recorded: no CPU estimate.
  curve = runs.eval_curve(str(tmp_path), {'train_time_s': 8.0, 'step': 40})
  assert curve[1]['train_cpu_s'] is None


def test_unfinished_run_restarts_from_scratch_then_is_reused(tmp_path, fake_trainer):
  """A resumed run would time only its last part; the studies compare whole runs."""
  config = configs.base_config()
  run_dir = tmp_path / 'run'
  (run_dir / 'checkpoints' / '43').mkdir(parents=True)
  assert runs.reusable_summary(config, str(run_dir)) is None  # not finished
  logged = []
  summary = runs.train_from_scratch(config, str(run_dir), log=logged.append)
  # The unfinished run was deleted first; the run is locked while it trains, not after.
  assert fake_trainer == [(['.run.lock'], os.getpid())]
  assert sorted(os.listdir(run_dir)) == ['history.jsonl', 'summary.json']
  assert not (run_dir / 'checkpoints').exists()
  assert 'Discarding the unfinished run' in logged[0]
  assert summary['eval_curve'] == [
      {'step': 2, 'top1': 25.0, 'train_time_s': 3.0, 'train_cpu_s': None},
      {'step': 4, 'top1': 50.0, 'train_time_s': 8.0, 'train_cpu_s': None}]
  assert runs.reusable_summary(config, str(run_dir)) == summary  # as a rerun reads it


@contextlib.contextmanager
def _held_by_another_process(*paths):
  """A live process holding `run_lock` on each of `paths` (killed, -9, on exit)."""
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from vivit_adapter.train_lib import run_lock\n'
       'for d in sys.argv[1:]: run_lock.acquire(d)\n'
       'print("locked", flush=True); time.sleep(600)', *map(str, paths)],
      cwd=tu.REPO, env=tu.env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    yield holder
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_a_run_another_process_is_training_is_refused_not_deleted(tmp_path, fake_trainer):
  """Two study processes on one workdir: the second must not delete the run (or cache)
  the first is making (it did: the unfinished-run rule rmtree'd it); it is refused,
  naming who."""
  run_dir, cache_dir = tmp_path / 'run', tmp_path / 'cache'
  (run_dir / 'checkpoints' / '43').mkdir(parents=True)
  (cache_dir / 'train-00000-of-00002.tfrecord').parent.mkdir()
  (cache_dir / 'train-00000-of-00002.tfrecord').write_text('half written')
  with _held_by_another_process(run_dir, cache_dir) as holder:
    with pytest.raises(cli.ConfigError, match=f'in use by another run \\(pid {holder.pid} '):
      runs.train_from_scratch(configs.base_config(), str(run_dir))
    with pytest.raises(cli.ConfigError, match=f'in use by another run \\(pid {holder.pid} '):
      runs.ensure_cache(configs.base_config(), str(cache_dir), views=1)
    assert (cache_dir / 'train-00000-of-00002.tfrecord').read_text() == 'half written'
  assert fake_trainer == [] and (run_dir / 'checkpoints' / '43').is_dir()
  runs.train_from_scratch(configs.base_config(), str(run_dir))  # its holder gone: trained
  assert fake_trainer == [(['.run.lock'], os.getpid())]


def test_a_stopped_run_is_not_finished(tmp_path, monkeypatch):
  monkeypatch.setattr(trainer, 'train_and_evaluate',
                      lambda config, workdir: {'preempted': True, 'step': 3})
  with pytest.raises(SystemExit, match='stopped \\(SIGTERM\\) at step 3; run the same ') as e:
    runs.train_from_scratch(configs.base_config(), str(tmp_path / 'run'))
  assert e.value.code == 75  # the study's process exits cli.PREEMPTED: requeue
  (tmp_path / reporting.SUMMARY_FILE).write_text(json.dumps({'preempted': True}))
  assert runs.finished_summary(str(tmp_path)) is None


def test_a_finished_run_of_another_config_is_an_error(tmp_path):
  config = configs.base_config()
  saved = _summary(config)
  saved['config']['model']['old_key'] = 1  # keys of another configs.py version: ignored
  del saved['config']['dataset']['flip']
  (tmp_path / reporting.SUMMARY_FILE).write_text(json.dumps(saved))
  assert runs.reusable_summary(config, str(tmp_path)) == dict(saved, eval_curve=[])
  config.batch_size += 1
  config.model.patches.size = (4, 4, 2)
  with pytest.raises(ValueError, match=r'summary.json is a finished run of another config '
                     r'\(keys that differ: batch_size, model.patches.size\)\. Delete '):
    runs.reusable_summary(config, str(tmp_path))
  assert (tmp_path / reporting.SUMMARY_FILE).exists()  # never deleted


def test_experiments_load_as_modules_the_way_the_cli_loads_them():
  overrides = ['dataset.base_dir=/data', 'model.hidden_size=24']
  config = experiment_configs.load('synthetic_stage1', overrides)
  path = os.path.join(REPO, 'experiments', 'synthetic_stage1.py')
  assert experiment_configs.path('synthetic_stage1') == path
  assert config.to_dict() == config_loading.load_config(path, overrides).to_dict()
  assert config.is_locked and config.model.hidden_size == 24
  with pytest.raises(FileNotFoundError, match=r"No experiment 'synthetic_stage9'"):
    experiment_configs.path('synthetic_stage9')


def test_a_study_skips_a_run_or_cache_another_process_is_making(tmp_path, capsys):
  """Two study processes on one workdir share its runs: what one is making the other
  counts as missing and moves on (the run's summary None), and takes up on a rerun."""
  from vivit_adapter.studies.ablation import run as ablation_run  # pylint: disable=g-import-not-at-top
  from vivit_adapter.studies.ablation.plan import Run, Schedule  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / 'run'
  (run_dir / 'checkpoints' / '43').mkdir(parents=True)
  run = Run('baseline', 8, Schedule(1e-3, 4, 1))
  with _held_by_another_process(run_dir) as holder:
    assert ablation_run.ensure_run(run, configs.base_config(), str(run_dir)) is None
  assert (f'{run.key}: skipped here, another process is training it (--workdir={run_dir} '
          f'is in use by another run (pid {holder.pid} ') in capsys.readouterr().out
  assert (run_dir / 'checkpoints' / '43').is_dir()
