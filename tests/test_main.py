"""vivit_adapter.main as a subprocess: start-up errors are one clear line with their exit
code, and a signal during start-up exits 75 (requeue), not 143."""

import os
import signal
import subprocess
import sys
import time

from data_pipelines import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'vivit_adapter.main', *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=120, check=False)


def test_unknown_override_key_fails_at_start_with_its_name(tmp_path):
  out = _main('--config=experiments/synthetic_stage1.py', f'--workdir={tmp_path}/run',
              '--config.modle.hidden_size=3')
  assert out.returncode == cli.USAGE_ERROR
  assert out.stderr == (
      "vivit_adapter.main: error: --config.modle.hidden_size: unknown config key: config "
      "has no field 'modle' (did you mean 'model'?); every key is declared, with its "
      'default, in vivit_adapter/configs.py.\n')
  assert not os.path.exists(tmp_path / 'run')


def test_missing_data_says_how_to_make_it(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  out = _main('--config=experiments/synthetic_stage1.py', f'--workdir={tmp_path}/run',
              f'--config.dataset.base_dir={empty}', '--num_processes=1')
  assert out.returncode == cli.USAGE_ERROR
  assert out.stderr.strip().splitlines()[-1] == (
      f"vivit_adapter.main: error: Table '{empty}/train.tfrecord@*' "
      'matches no file. Convert videos with `python -m data_pipelines.convert_videos`, '
      'generate the synthetic dataset with `python -m data_pipelines.synthetic`, or point '
      'config.dataset.base_dir at the folder that holds the shards.')
  assert 'Traceback' not in out.stderr


def test_workdir_that_is_a_file_and_sigterm_during_start_up(tmp_path):
  # Both start-up paths in one test: each subprocess costs a TensorFlow import.
  afile = tmp_path / 'afile'
  afile.write_text('x')
  out = _main('--config=experiments/synthetic_stage1.py', f'--workdir={afile}')
  assert out.stderr.strip().splitlines()[-1] == (
      f'vivit_adapter.main: error: --workdir={afile} is a file, not a directory; give a '
      'directory (it is created if missing).')
  assert out.returncode == cli.USAGE_ERROR
  proc = subprocess.Popen([sys.executable, '-m', 'vivit_adapter.main',
                           '--config=experiments/synthetic_stage1.py',
                           f'--workdir={tmp_path}/run'], cwd=REPO, env=_env(),
                          stderr=subprocess.PIPE, text=True)
  time.sleep(1.5)  # importing TensorFlow, before any training
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == cli.PREEMPTED, err[-2000:]
  assert err.strip().splitlines()[-1] == (
      'vivit_adapter.main: stopped by SIGTERM; nothing was left half-written; rerun the '
      'same command to continue (a run resumes from its last checkpoint).')
