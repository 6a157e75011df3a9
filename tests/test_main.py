"""vivit_adapter.main as a subprocess: start-up errors are one clear line and exit 1."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'vivit_adapter.main', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_unknown_override_key_fails_at_start_with_its_name(tmp_path):
  out = _main('--config=experiments/synthetic_stage1.py', f'--workdir={tmp_path}/run',
              '--config.modle.hidden_size=3')
  assert out.returncode == 1
  assert ("FATAL Flags parsing error: --config.modle.hidden_size: unknown config key: "
          "config has no field 'modle' (did you mean 'model'?)") in out.stderr
  assert 'Traceback' not in out.stderr
  assert not os.path.exists(tmp_path / 'run')


def test_missing_data_says_how_to_make_it(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  out = _main('--config=experiments/synthetic_stage1.py', f'--workdir={tmp_path}/run',
              f'--config.dataset.base_dir={empty}', '--num_processes=1')
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      f"vivit_adapter.main: error: FileNotFoundError: Table '{empty}/train.tfrecord@*' "
      'matches no file. Convert videos with `python -m data_pipelines.convert_videos`, '
      'generate the synthetic dataset with `python -m data_pipelines.synthetic`, or point '
      'config.dataset.base_dir at the folder that holds the shards.')
  assert 'Traceback' not in out.stderr
