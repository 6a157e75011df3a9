r"""Runs the frozen part of a stage-2 model once per clip and view and stores the result.

  python -m vivit_adapter.extract_features --config=experiments/synthetic_stage2.py \
      --cache_dir=runs/synthetic_cache --views=4 [--config.key=value ...]

then train stage 2 from it:

  python -m vivit_adapter.main --config=experiments/synthetic_stage2.py \
      --workdir=runs/synthetic_stage2 --config.feature_cache.dir=runs/synthetic_cache

The stage-2 config decides everything that shapes the features: the model, the init
checkpoint (the stage-1 run) and the dataset's clip and augmentation settings. The
training split is stored as --views augmented views per video (a different random view
per view index), eval and test with their deterministic views. What is stored is what
the model's trainable part reads: every token for 'attention', the pooled vector otherwise
(docs/design.md §2b); with config.model.trainable_spatial_layers = k > 0, every token
after spatial layer L-k, whatever the adapter (§2d). A rerun of the same command skips the finished shards.
Several processes (--coordinator_address, --num_processes, --process_id, or a Cloud TPU
slice) each extract their own shards.
"""

import sys
from typing import Dict

from absl import app
from absl import flags
from absl import logging

from data_pipelines import cli
from vivit_adapter import config_loading
from vivit_adapter import distributed

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags (only when it runs as a program)."""
  config_loading.define_config_flag()
  flags.DEFINE_string('cache_dir', None, 'Directory of the feature cache (local or a URL '
                      'tf.io.gfile reads).', required=True)
  flags.DEFINE_integer('views', 4, 'Augmented views stored per training video; stage 2 '
                       'draws one of them per video and epoch.')
  # A string, checked by run() against features.extraction.STORE_DTYPES (which imports
  # JAX: an enum of its keys here would make --help wait for JAX).
  flags.DEFINE_string('dtype', 'bfloat16', 'Storage dtype of the features: bfloat16 or '
                      'float32.')
  flags.DEFINE_list('splits', ['train', 'eval', 'test'], 'Splits to extract (a missing '
                    'eval/test table is skipped with a warning).')
  flags.DEFINE_integer('videos_per_batch', 0, 'Videos per forward pass; 0 -> '
                       'config.eval_batch_size clips worth.')
  distributed.define_flags()


def start_params(config, model):
  """The parameters stage 2 starts from (fresh init, then config.init_from), on the host,
  with the log message: the trainer's own start from config.init_from."""
  import jax  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import assembly  # pylint: disable=g-import-not-at-top
  init_rng, _ = assembly.run_rngs(config)
  params = assembly.init_params(config, model, init_rng)
  if not config.init_from.checkpoint_path:
    return jax.device_get(params), 'fresh initialisation (config.init_from is empty)'
  params, message = assembly.load_init_from(config, params)
  return jax.device_get(params), message


def _view_shape(config, model, params):
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from vivit_adapter import models
  # pylint: enable=g-import-not-at-top
  clip = jax.ShapeDtypeStruct((1, config.dataset.num_frames, config.dataset.crop_size,
                               config.dataset.crop_size, 3), jnp.uint8)
  return jax.eval_shape(
      lambda p, v: model.apply({'params': p}, v, part=models.FROZEN_PART), params, clip
  ).shape[1:]


def run(config, cache_dir: str, *, views: int, dtype: str, splits, videos_per_batch: int,
        command: str) -> Dict:
  """Extracts `splits` of `config`'s dataset into `cache_dir`; returns the statistics.

  Raises ValueError (a config that freezes nothing, bad flags), feature_cache.CacheError
  (the directory holds another cache), OSError (not enough disk).
  """
  # JAX, TensorFlow and the model code load here, not with the module: --help is fast.
  # pylint: disable=g-import-not-at-top
  import jax
  import data_pipelines
  from data_pipelines import feature_cache
  from vivit_adapter import models
  from vivit_adapter.features import extraction
  from vivit_adapter.train_lib import optimizers
  # pylint: enable=g-import-not-at-top
  if dtype not in extraction.STORE_DTYPES:
    raise ValueError(f'--dtype={dtype!r}; expected one of {sorted(extraction.STORE_DTYPES)}.')
  if not config.model.freeze_spatial:
    raise ValueError('config.model.freeze_spatial is False: there is no frozen part to '
                     'cache. Use a stage-2 experiment (e.g. experiments/synthetic_stage2.py).')
  if views < 1:
    raise ValueError(f'--views={views} must be >= 1.')
  info = data_pipelines.dataset_info(config.dataset)
  model = models.create_model(config.model, info.num_classes, config.dataset.normalization)
  params, message = start_params(config, model)
  logging.info('Frozen part from: %s', message)
  frozen = optimizers.frozen_keys(params, True, config.model.trainable_spatial_layers)
  plans = [extraction.plan_split(config.dataset, s, extraction.split_views(config, s, views),
                                 jax.process_index(), jax.process_count())
           for s in extraction.available_splits(config, splits)]
  view_shape = _view_shape(config, model, params)
  manifest = extraction.build_manifest(
      config, info, params, frozen, views=views, dtype=dtype,
      view_shapes={p.split: view_shape for p in plans}, plans=plans, command=command)
  extraction.check_existing(cache_dir, manifest)
  extraction.check_disk(cache_dir, plans, view_shape, dtype)
  if jax.process_index() == 0:
    feature_cache.write_manifest(cache_dir, manifest)
  mesh = extraction.local_mesh()
  placed = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  per_batch = videos_per_batch or max(1, config.eval_batch_size // max(p.views for p in plans))
  return extraction.extract(cache_dir, plans, config.dataset,
                            extraction.frozen_forward(model, mesh, dtype), placed,
                            seed=config.rng_seed, num_classes=info.num_classes,
                            videos_per_batch=per_batch)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from data_pipelines import tf_runtime  # pylint: disable=g-import-not-at-top
  tf_runtime.configure()
  cli.quiet_library_logs()
  command = 'python -m vivit_adapter.extract_features ' + ' '.join(sys.argv[1:])
  with cli.usage_errors():  # ValueErrors here are bad flags or config values
    distributed.initialize_from_flags()
    stats = run(FLAGS.config, FLAGS.cache_dir, views=FLAGS.views, dtype=FLAGS.dtype,
                splits=FLAGS.splits, videos_per_batch=FLAGS.videos_per_batch,
                command=command)
  seconds = stats.pop('seconds')
  stats.pop('cpu_seconds')
  for split, s in stats.items():
    print(f'{split}: {s["written"]} videos written, {len(s["bad"])} bad records skipped, '
          f'{s["skipped_shards"]} shards already done')
  print(f'Feature cache {FLAGS.cache_dir} complete ({seconds:.1f} s of extraction). Train '
        f'from it with --config.feature_cache.dir={FLAGS.cache_dir}')


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=config_loading.flags_parser)
