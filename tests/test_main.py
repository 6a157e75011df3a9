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
  assert out.stderr == (
      f"vivit_adapter.main: error: No training data in '{empty}': no files for the tables "
      "train 'train.tfrecord@*', eval 'validation.tfrecord@*', test 'test.tfrecord@*'. "
      'Convert videos with `python -m data_pipelines.convert_videos`, '
      'generate the synthetic dataset with `python -m data_pipelines.synthetic`, or point '
      'config.dataset.base_dir at the folder that holds the shards.\n')


def _main_in(cwd, *args):
  """The CLI started from `cwd` (where runs/ goes), this checkout's packages and configs."""
  return subprocess.run([sys.executable, '-m', 'vivit_adapter.main', *args], cwd=cwd,
                        env=dict(_env(), PYTHONPATH=REPO), capture_output=True, text=True,
                        timeout=120, check=False)


def test_the_cards_command_without_workdir_runs_in_runs_experiment_name(tmp_path):
  # The design card's command, as written, from a folder with no data: the first line
  # says where the run goes, the one error line names every missing table.
  out = _main_in(tmp_path, f'--config={REPO}/experiments/k400_stage2.py')
  assert out.stdout == 'workdir not given: using runs/k400_stage2\n'
  assert out.stderr == (
      "vivit_adapter.main: error: No training data in 'data/kinetics400': no files for the "
      "tables train 'train.tfrecord@*', eval 'validation.tfrecord@*', test "
      "'test.tfrecord@*'. Convert videos with `python -m data_pipelines.convert_videos`, "
      'generate the synthetic dataset with `python -m data_pipelines.synthetic`, or point '
      'config.dataset.base_dir at the folder that holds the shards.\n')
  assert out.returncode == cli.USAGE_ERROR
  assert not os.path.exists(tmp_path / 'runs')
  # The default workdir goes through the same guard as a given one.
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'k400_stage2').write_text('x')
  out = _main_in(tmp_path, f'--config={REPO}/experiments/k400_stage2.py')
  assert out.stdout == 'workdir not given: using runs/k400_stage2\n'
  assert out.stderr == ('vivit_adapter.main: error: --workdir=runs/k400_stage2 is a file, '
                        'not a directory; give a directory (it is created if missing).\n')


def test_no_workdir_and_no_experiment_name_is_one_line(tmp_path):
  out = _main_in(tmp_path, f'--config={REPO}/experiments/synthetic_stage1.py',
                 '--config.experiment_name=')
  assert (out.returncode, out.stdout) == (cli.USAGE_ERROR, '')
  assert out.stderr == ('vivit_adapter.main: error: --workdir not given and '
                        'config.experiment_name is empty: give --workdir, or '
                        '--config.experiment_name to run in runs/<name>.\n')


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
