"""The start-up check of a training run: everything that can fail before anything compiles.

`check` is the one check, run once per run whatever the entry: `vivit_adapter.main` runs
it before joining the other processes (so that a bad value, missing data or a missing
init checkpoint stops every process with one line instead of a traceback minutes into
compilation) and hands what it returns, a `Checked`, to `train_and_evaluate`; a caller
that hands none (the studies, the demo, a user's Python) gets the same check from
`train_and_evaluate` itself. Each config section is checked by the component that uses
it (`check_config`); configs.py only declares the keys.
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

import ml_collections

from data_pipelines import cli
from data_pipelines import dmvr_format
from data_pipelines import feature_cache
from data_pipelines import fs
from data_pipelines import reader
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import load
from vivit_adapter.train_lib import optimizers
from vivit_adapter.train_lib import workdir_guard


@dataclasses.dataclass(frozen=True)
class Checked:
  """What `check` returns: this config passed the start-up check for this workdir.

  `train_and_evaluate(..., checked=...)` takes it instead of checking again; a config,
  workdir or allow_config_change other than the checked ones is checked again.
  """
  config_json: str
  workdir: str
  allow_config_change: bool

  def covers(self, config: ml_collections.ConfigDict, workdir: str,
             allow_config_change: bool) -> bool:
    return (self.config_json, self.workdir, self.allow_config_change) == (
        config.to_json(), workdir, allow_config_change)


def check(config: ml_collections.ConfigDict, workdir: str,
          allow_config_change: bool = False) -> Checked:
  """The one start-up check, in the order docs/reliability.md reports problems.

  The workdir's checkpoints against this config (nothing is written before), then the
  config's values and the run's inputs (`check_run_inputs`), then a file written to the
  workdir and deleted, then the data's sizes against its files (`check_data_against_files`).

  Raises:
    cli.ConfigError: workdir_guard.check_workdir's refusal.
    ValueError, FileNotFoundError, feature_cache.CacheError: see `check_run_inputs`.
    OSError: the workdir cannot be written.
  """
  workdir_guard.check_workdir(config, workdir, allow_config_change)
  check_run_inputs(config)
  workdir_guard.probe_writable(workdir)
  check_data_against_files(config)
  return Checked(config.to_json(), workdir, allow_config_change)


def ensure_checked(config: ml_collections.ConfigDict, workdir: str,
                   allow_config_change: bool, checked: Optional[Checked]) -> Checked:
  """`checked` when it covers this run, else `check`'s result: a run starts checked."""
  if checked is not None and checked.covers(config, workdir, allow_config_change):
    return checked
  return check(config, workdir, allow_config_change)


def choices() -> Dict[str, Tuple[str, ...]]:
  """Every key whose value is one of a fixed set of names -> those names, from their
  owners (`check_config` checks them). Except `optimizer` and `lr_configs.schedule`,
  which train_lib.optimizers.check_config checks with its other settings."""
  dataset = {f'dataset.{key}': names for key, names in reader.DATASET_CHOICES.items()}
  return {'stage': configs.STAGES, **models.CONFIG_CHOICES, **load.CONFIG_CHOICES,
          **dataset}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks what the type system cannot, each section by its owner; raises ValueError
  naming the key.

  In this order: the stage; the model's named choices (models); config.init_from's
  (checkpoints); config.dataset (data_pipelines.reader, its named choices too); the
  training run's own keys; the model's sizes; the feature cache; the optimizer
  (train_lib.optimizers).
  """
  if config.stage not in configs.STAGES:
    raise ValueError(f'config.stage={config.stage!r}; expected one of {configs.STAGES}.')
  models.check_choices(config)
  load.check_config(config)
  reader.check_config(config.dataset)
  _check_training(config)
  models.check_sizes(config)
  if config.feature_cache.dir and not config.model.freeze_spatial:
    raise ValueError(
        f'config.feature_cache.dir={config.feature_cache.dir!r} needs '
        'config.model.freeze_spatial=True: a feature cache stores the frozen spatial '
        "encoder's output, which an end-to-end run would change.")
  optimizers.check_config(config)


def _check_training(config: ml_collections.ConfigDict) -> None:
  for key in ('batch_size', 'eval_batch_size', 'gradient_accumulation_steps',
              'class_report.top_k'):
    value = configs.lookup(config, key)
    if value <= 0:
      raise ValueError(f'config.{key}={value} must be positive.')
  if config.num_training_steps <= 0 and config.num_training_epochs <= 0:
    raise ValueError('Set config.num_training_steps or config.num_training_epochs > 0.')
  if config.batch_size % config.gradient_accumulation_steps:
    raise ValueError(
        f'config.batch_size={config.batch_size} must be divisible by '
        f'config.gradient_accumulation_steps={config.gradient_accumulation_steps}.')


def check_run_inputs(config: ml_collections.ConfigDict) -> None:
  """Fails before any compilation on a bad value, missing data or a missing init path.

  Raises:
    ValueError: `check_config`'s complaint, naming the key.
    FileNotFoundError: no training data (the message says how to make or point to it),
      or config.init_from.checkpoint_path does not exist.
    feature_cache.CacheError: config.feature_cache.dir is not a complete cache (the
      message names what is missing and the command that completes it).
  """
  check_config(config)
  if config.feature_cache.dir:  # the cache replaces the training videos
    cache = config.feature_cache.dir
    feature_cache.require_complete(cache, feature_cache.read_manifest(cache), ['train'])
  else:
    _check_tables(config.dataset)
  path = config.init_from.checkpoint_path
  if path and not fs.exists(path):
    hint = ' Train stage 1 first (with that --workdir), or' if config.stage == 'stage2' else ''
    raise FileNotFoundError(f'config.init_from.checkpoint_path={path!r} does not exist.'
                            f'{hint} set --config.init_from.checkpoint_path.')


def _check_tables(ds_cfg: ml_collections.ConfigDict) -> None:
  """The train table has files. Without it the error names every split's missing table:
  a run pointed at the wrong folder (or at none, as a config's default base_dir is before
  the data is made) hears it once, not split by split."""
  try:
    reader.make_source(ds_cfg, 'train')
    return
  except FileNotFoundError as e:
    if ds_cfg.name == 'tfds':
      raise
    error = e
  missing = ['train'] + [split for split in reader.SPLITS[1:] if _has_no_files(ds_cfg, split)]
  if len(missing) == 1:
    raise error
  where = f' in {ds_cfg.base_dir!r}' if ds_cfg.base_dir else ''
  tables = ', '.join(f"{split} {ds_cfg[f'{split}_table']!r}" for split in missing)
  raise FileNotFoundError(f'No training data{where}: no files for the tables {tables}. '
                          f'{dmvr_format.MAKE_DATA_HINT}')


def _has_no_files(ds_cfg: ml_collections.ConfigDict, split: str) -> bool:
  try:
    reader.make_source(ds_cfg, split)
  except FileNotFoundError:
    return True
  return False


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


def check_after_join(config: ml_collections.ConfigDict, process_count: int) -> None:
  """What can only be checked once the processes joined (the device and process counts
  are known), before compiling: each process has its own files, and both batch sizes
  divide over the devices (the eval batch failed at the first eval)."""
  check_shards_per_host(config, process_count)
  check_batch_sizes(config)




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
  listed = reader.read_metadata(ds).get('splits', {})
  counts = {}
  for split in reader.SPLITS:
    name = reader.METADATA_SPLITS[split]
    try:
      source = reader.make_source(ds, split)
    except FileNotFoundError as e:
      if split in needed_splits(config) and int(listed.get(name, 0)):
        raise cli.ConfigError(
            f'{meta_path}: splits.{name} = {listed[name]} but config.dataset.{split}_table '
            f'has no shards ({e}) Restore them, or remove the split from metadata.json.'
        ) from e
      continue
    counts[split] = sum(dmvr_format.count_tfrecords(f) for f in source.files)
    if name in listed and int(listed[name]) != counts[split]:
      raise cli.ConfigError(
          f'{meta_path}: splits.{name} = {listed[name]} but the {len(source.files)} shard(s) of '
          f'{source.table!r} hold {counts[split]} records. Write '
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
  """Both batch sizes divide over the devices."""
  from vivit_adapter.train_lib import parallel  # pylint: disable=g-import-not-at-top
  parallel.per_process_batch_size(config.batch_size)
  parallel.per_process_batch_size(config.eval_batch_size, 'config.eval_batch_size')
