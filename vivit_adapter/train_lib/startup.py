"""Start-up checks of a training run: everything that can fail before anything compiles.

`vivit_adapter.main` calls `check_run_inputs` before joining the other processes, so
that a bad value, missing data or a missing init checkpoint stops every process with one
line instead of a traceback minutes into compilation.
"""

import ml_collections

from data_pipelines import feature_cache
from data_pipelines import fs
from data_pipelines import reader
from vivit_adapter import configs
from vivit_adapter.train_lib import optimizers


def check_run_inputs(config: ml_collections.ConfigDict) -> None:
  """Fails before any compilation on a bad value, missing data or a missing init path.

  Raises:
    ValueError: configs.validate's or optimizers.check_config's complaint, naming the key.
    FileNotFoundError: no training data (the message says how to make or point to it),
      or config.init_from.checkpoint_path does not exist.
    feature_cache.CacheError: config.feature_cache.dir is not a complete cache (the
      message names what is missing and the command that completes it).
  """
  configs.validate(config)
  optimizers.check_config(config)
  if config.feature_cache.dir:  # the cache replaces the training videos
    cache = config.feature_cache.dir
    feature_cache.require_complete(cache, feature_cache.read_manifest(cache), ['train'])
  else:
    reader.make_source(config.dataset, 'train')
  path = config.init_from.checkpoint_path
  if path and not fs.exists(path):
    hint = ' Train stage 1 first (with that --workdir), or' if config.stage == 'stage2' else ''
    raise FileNotFoundError(f'config.init_from.checkpoint_path={path!r} does not exist.'
                            f'{hint} set --config.init_from.checkpoint_path.')


def check_shards_per_host(config: ml_collections.ConfigDict, process_count: int) -> None:
  """Every split's table has a file for each process: each process reads its own files.

  Runs once jax.distributed knows the process count; every process checks the same
  tables, so they all stop together. A run from a feature cache reads the cache's
  shards instead of the videos.

  Raises:
    ValueError: a table with fewer files than processes (`reader.host_files` names it).
  """
  if config.feature_cache.dir:
    manifest = feature_cache.read_manifest(config.feature_cache.dir)
    for split, info in manifest['splits'].items():
      reader.host_files(list(range(info['num_shards'])), 0, process_count,
                        f'{config.feature_cache.dir} ({split} features)')
    return
  ds_cfg = config.dataset
  for split in reader.SPLITS:
    try:
      source = reader.make_source(ds_cfg, split)
    except FileNotFoundError:
      continue  # check_run_inputs stops on a missing train table; eval, test may be absent
    reader.host_files(source.files, 0, process_count, source.table)
