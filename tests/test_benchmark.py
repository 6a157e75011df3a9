"""data_pipelines.benchmark, and its CLI vivit_adapter.benchmark_data on a tiny experiment."""

import re
import subprocess
import sys

import numpy as np

from data_pipelines import benchmark
from data_pipelines import dmvr_format
from vivit_adapter import configs


def _write_data(directory):
  frames = np.random.default_rng(0).integers(0, 255, (6, 12, 16, 3), dtype=np.uint8)
  with dmvr_format.ShardedWriter(str(directory / 'train.tfrecord'), 2) as writer:
    for i in range(6):
      writer.write(dmvr_format.make_sequence_example(
          dmvr_format.encode_jpeg_frames(frames), i % 3).SerializeToString())


def test_benchmark_function_counts_clips(tmp_path):
  _write_data(tmp_path)
  ds = configs.base_config().dataset
  ds.update(base_dir=str(tmp_path), num_classes=3, num_frames=4, min_resize=12, crop_size=8)
  result = benchmark.benchmark(ds, batch_size=2, num_batches=3, warmup_batches=1)
  assert result['clips_per_s'] > 0 and result['num_seen'] == 8 and result['num_bad'] == 0


def test_benchmark_cli_on_a_config_file(tmp_path):
  _write_data(tmp_path)
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'from vivit_adapter import configs\n\n\n'
      'def get_config():\n'
      '  c = configs.base_config()\n'
      f'  c.dataset.base_dir = {str(tmp_path)!r}\n'
      '  c.dataset.num_classes = 3\n'
      '  c.dataset.num_frames = 4\n'
      '  c.dataset.min_resize = 12\n'
      '  c.dataset.crop_size = 8\n'
      '  c.batch_size = 4\n'
      '  return c\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.benchmark_data', f'--config={config_file}',
       '--num_batches=3', '--warmup_batches=1', '--config.dataset.crop_size=10'],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'xla_bridge' not in proc.stderr  # the libraries' INFO lines are quiet, as in main
  match = re.search(r'train input pipeline: ([\d.]+) clips/s \(3 batches of 4 clips of '
                    r'4x10x10 in', proc.stdout)
  assert match and float(match.group(1)) > 0, proc.stdout
