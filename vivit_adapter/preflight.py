"""Start-up checks of a training run: everything that can fail before anything compiles.

`vivit_adapter.main` calls `check_run_inputs` before joining the other processes, so
that a bad value, missing data or a missing init checkpoint stops every process with one
line instead of a traceback minutes into compilation.
"""

import os

import ml_collections

from data_pipelines import cli
from data_pipelines import dmvr_format
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


# config split -> its name in metadata.json's "splits" (the converter's and generator's)
_METADATA_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'test'}


def needed_splits(config: ml_collections.ConfigDict) -> tuple:
  """The splits a run reads: train, eval (every run ends with one), test if run_test."""
  return ('train', 'eval') + (('test',) if config.run_test else ())


def check_data_against_files(config: ml_collections.ConfigDict) -> dict:
  """Data truth from the files, before any training: every split metadata.json lists
  and the run needs has its shards, each split's size in metadata.json is the count in
  its shards (the epoch size and the bad-record budget come from it), the label map is
  well formed, and a batch fits in the training split. Returns {split: record count}.

  Raises:
    cli.ConfigError: one line naming the file, the field and what the files say.
  """
  ds = config.dataset
  if config.feature_cache.dir or ds.name != 'dmvr':
    return {}
  reader.check_config(ds)  # empty table names, before a table is looked for
  meta_path = os.path.join(ds.base_dir, reader.METADATA_FILE)
  listed = reader._metadata(ds).get('splits', {})  # pylint: disable=protected-access
  counts = {}
  for split in reader.SPLITS:
    name = _METADATA_SPLITS[split]
    try:
      files = reader.make_source(ds, split).files
    except FileNotFoundError as e:
      if split in needed_splits(config) and int(listed.get(name, 0)):
        raise cli.ConfigError(
            f'{meta_path}: splits.{name} = {listed[name]} but config.dataset.{split}_table '
            f'has no shards ({e}) Restore them, or remove the split from metadata.json.'
        ) from e
      continue
    counts[split] = sum(dmvr_format.count_tfrecords(f) for f in files)
    if name in listed and int(listed[name]) != counts[split]:
      raise cli.ConfigError(
          f'{meta_path}: splits.{name} = {listed[name]} but the {len(files)} shard(s) of '
          f'{reader.make_source(ds, split).table!r} hold {counts[split]} records. Write '
          'metadata.json again with the data, or delete it (sizes are then counted).')
  _check_label_map(ds)
  train = ds.num_train_examples or counts.get('train', 0)
  if train and config.batch_size > train:
    raise cli.ConfigError(
        f'config.batch_size={config.batch_size} is larger than the training split '
        f'({train} records in {ds.train_table!r}): every batch would repeat records of '
        'one epoch. Lower config.batch_size.')
  return counts


def _check_label_map(ds) -> None:
  path = ds.label_map or os.path.join(ds.base_dir, reader.LABEL_MAP_FILE)
  if ds.label_map or fs.exists(path):
    dmvr_format.read_label_map(path)  # blank or duplicate lines: one line, naming both


def check_batch_sizes(config: ml_collections.ConfigDict) -> None:
  """Both batch sizes divide over the devices: checked once the processes joined (the
  device count is known), before compiling; the eval batch failed at the first eval."""
  from vivit_adapter.train_lib import parallel  # pylint: disable=g-import-not-at-top
  parallel.per_process_batch_size(config.batch_size)
  parallel.per_process_batch_size(config.eval_batch_size, 'config.eval_batch_size')
