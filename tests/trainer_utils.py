"""Shared pieces of the trainer tests: a tiny dataset, a tiny config, subprocess runs."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIG = '''
from vivit_adapter import configs

def get_config():
  c = configs.base_config()
  c.experiment_name = 'tiny'
  m = c.model
  m.hidden_size = 32
  m.patches.size = (8, 8, 2)
  for enc in (m.spatial_transformer, m.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 1, 2, 64
  d = c.dataset
  d.base_dir = {base_dir!r}
  d.num_frames, d.stride, d.min_resize, d.crop_size = 8, 2, 32, 32
  d.num_test_clips, d.num_test_crops = 2, 1
  d.shuffle_buffer = 16
  c.batch_size = c.eval_batch_size = 8
  c.num_training_steps = 6
  c.log_summary_steps = 1
  c.checkpoint_steps = 3
  c.log_eval_steps = 100
  c.run_test = False
  c.optimizer = 'adamw'
  c.lr_configs.base_learning_rate = 3e-3
  c.lr_configs.warmup_steps = 1
  return c
'''


def make_dataset(path):
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(str(path), seed=0, resolution=32, num_frames=16, train_per_class=4,
                     val_per_class=1, test_per_class=1, num_shards=2, progress=False)
  return str(path)


def tiny_config(base_dir):
  """TINY_CONFIG's config, built in this process (for runs that share its memory)."""
  namespace = {}
  exec(TINY_CONFIG.format(base_dir=base_dir), namespace)  # pylint: disable=exec-used
  return namespace['get_config']()


def write_config(directory, base_dir) -> str:
  path = os.path.join(str(directory), 'tiny_config.py')
  with open(path, 'w') as f:
    f.write(TINY_CONFIG.format(base_dir=base_dir))
  return path


def main_command(config_path, workdir, *overrides):
  return [sys.executable, '-m', 'vivit_adapter.main', f'--config={config_path}',
          f'--workdir={workdir}', *overrides]


def xla_flags(devices: int) -> str:
  """This process's XLA_FLAGS (conftest's compile settings) with `devices` CPU devices."""
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  return ' '.join([f'--xla_force_host_platform_device_count={devices}'] + kept)


def env(devices: int = 1):
  e = dict(os.environ)
  e['XLA_FLAGS'] = xla_flags(devices)
  e['TF_CPP_MIN_LOG_LEVEL'] = '2'
  e['PYTHONPATH'] = REPO
  return e


def run_main(config_path, workdir, *overrides, devices=1, check=True):
  proc = subprocess.run(main_command(config_path, workdir, *overrides), cwd=REPO,
                        env=env(devices), capture_output=True, text=True, timeout=600)
  if check and proc.returncode:
    raise AssertionError(f'main failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return proc


def final_params(workdir, step=-1):
  from vivit_adapter import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.flatten(checkpoints.restore_workdir_params(workdir, step))


def assert_trees_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
