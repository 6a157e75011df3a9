r"""Measures the training input pipeline (read, decode, augment) in clips per second.

  python -m data_pipelines.benchmark --config=experiments/X.py [--num_batches=50] \
      [--config.dataset.base_dir=/data/kinetics]

Uses the experiment's dataset settings and per-host batch size (config.batch_size split
over the hosts), so the number answers "can the input keep up with this experiment?".
"""

import time
from typing import Dict

from absl import app
from absl import flags
from data_pipelines import reader
from vivit_adapter import config_loading

# The same --config flag as vivit_adapter.main: locked, and a misspelt
# --config.key=value fails with the key's name instead of a traceback.
_CONFIG = config_loading.define_config_flag()
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 20, 'Batches to time.')
_WARMUP_BATCHES = flags.DEFINE_integer(
    'warmup_batches', 2, 'Batches read before timing (tracing, buffers filling up).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 0, '0 -> config.batch_size per host.')


def benchmark(ds_cfg, batch_size: int, num_batches: int, warmup_batches: int = 2,
              seed: int = 0) -> Dict[str, float]:
  """Times `num_batches` training batches after `warmup_batches`, on this host."""
  start = time.perf_counter()
  iterator = reader.make_train_iterator(ds_cfg, batch_size=batch_size, seed=seed)
  for _ in range(warmup_batches):
    next(iterator)
  warm = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  elapsed = time.perf_counter() - warm
  return {'clips_per_s': num_batches * batch_size / elapsed, 'seconds': elapsed,
          'startup_seconds': warm - start, 'num_seen': iterator.num_seen,
          'num_bad': iterator.num_bad}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required.')
  batch_size = _BATCH_SIZE.value or config.batch_size // jax.process_count()
  ds = config.dataset
  result = benchmark(ds, batch_size, _NUM_BATCHES.value, _WARMUP_BATCHES.value,
                     config.rng_seed)
  print(f'train input pipeline: {result["clips_per_s"]:.1f} clips/s '
        f'({_NUM_BATCHES.value} batches of {batch_size} clips of {ds.num_frames}x'
        f'{ds.crop_size}x{ds.crop_size} in {result["seconds"]:.2f}s; start-up and '
        f'{_WARMUP_BATCHES.value} warm-up batches {result["startup_seconds"]:.2f}s; '
        f'{result["num_bad"]} bad of {result["num_seen"]} records read)', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser)
