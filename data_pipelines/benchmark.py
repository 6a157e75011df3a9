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


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  config_loading.define_config_flag()
  flags.DEFINE_integer('num_batches', 20, 'Batches to time.')
  flags.DEFINE_integer(
      'warmup_batches', 2, 'Batches read before timing (tracing, buffers filling up).')
  flags.DEFINE_integer('batch_size', 0, '0 -> config.batch_size per host.')


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  if config is None:
    raise app.UsageError('--config is required.')
  batch_size = FLAGS.batch_size or config.batch_size // jax.process_count()
  ds = config.dataset
  result = benchmark(ds, batch_size, FLAGS.num_batches, FLAGS.warmup_batches,
                     config.rng_seed)
  print(f'train input pipeline: {result["clips_per_s"]:.1f} clips/s '
        f'({FLAGS.num_batches} batches of {batch_size} clips of {ds.num_frames}x'
        f'{ds.crop_size}x{ds.crop_size} in {result["seconds"]:.2f}s; start-up and '
        f'{FLAGS.warmup_batches} warm-up batches {result["startup_seconds"]:.2f}s; '
        f'{result["num_bad"]} bad of {result["num_seen"]} records read)', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=config_loading.flags_parser)
