r"""Measures an experiment's training input pipeline (read, decode, augment) in clips/s.

  python -m vivit_adapter.benchmark_data --config=experiments/X.py [--num_batches=50] \
      [--config.dataset.base_dir=/data/kinetics]

Uses the experiment's dataset settings and per-host batch size (config.batch_size split
over the hosts), so the number answers "can the input keep up with this experiment?".
With --config.feature_cache.dir=DIR it also reads that cache's training stream, the
input of stage 2 from cached features, and prints both rates.
The measurement is data_pipelines.benchmark; this module adds the experiment file.
"""

from absl import app
from absl import flags

from data_pipelines import cli
from vivit_adapter import config_loading

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  # The same --config flag as vivit_adapter.main: locked, and a misspelt
  # --config.key=value fails with the key's name instead of a traceback.
  config_loading.define_config_flag()
  flags.DEFINE_integer('num_batches', 20, 'Batches to time.')
  flags.DEFINE_integer(
      'warmup_batches', 2, 'Batches read before timing (tracing, buffers filling up).')
  flags.DEFINE_integer('batch_size', 0, '0 -> config.batch_size per host.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # TensorFlow and JAX load here, not with the module: --help answers without them.
  # pylint: disable=g-import-not-at-top
  import jax
  from data_pipelines import benchmark
  from data_pipelines import tf_runtime
  # pylint: enable=g-import-not-at-top
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  cli.quiet_library_logs()
  config = FLAGS.config
  batch_size = FLAGS.batch_size or config.batch_size // jax.process_count()
  ds = config.dataset
  result = benchmark.benchmark(ds, batch_size, FLAGS.num_batches, FLAGS.warmup_batches,
                               config.rng_seed)
  print(f'train input pipeline: {result["clips_per_s"]:.1f} clips/s '
        f'({FLAGS.num_batches} batches of {batch_size} clips of {ds.num_frames}x'
        f'{ds.crop_size}x{ds.crop_size} in {result["seconds"]:.2f}s; start-up and '
        f'{FLAGS.warmup_batches} warm-up batches {result["startup_seconds"]:.2f}s; '
        f'{result["num_bad"]} bad of {result["num_seen"]} records read)', flush=True)
  if config.feature_cache.dir:
    cached = benchmark_cache(config, batch_size)
    print(f'feature cache {config.feature_cache.dir}: {cached["clips_per_s"]:.1f} clips/s '
          f'({cached["clips_per_s"] / result["clips_per_s"]:.1f}x the videos; '
          f'{FLAGS.num_batches} batches of {batch_size} stored views)', flush=True)


def benchmark_cache(config, batch_size: int):
  """The same measurement on the training stream of config.feature_cache.dir."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import benchmark
  from data_pipelines import feature_cache
  # pylint: enable=g-import-not-at-top
  cache_dir = config.feature_cache.dir
  manifest = feature_cache.read_manifest(cache_dir)
  return benchmark.time_iterator(
      lambda: feature_cache.make_train_iterator(
          cache_dir, manifest, batch_size=batch_size, seed=config.rng_seed,
          shuffle_buffer=config.dataset.shuffle_buffer),
      batch_size, FLAGS.num_batches, FLAGS.warmup_batches)


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=config_loading.flags_parser)
