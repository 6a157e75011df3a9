"""Where a run's batches come from: video shards, or a feature cache.

A video source decodes and augments clips every step and the step runs the whole model.
A cached source (`config.feature_cache.dir`, docs/design.md §2b) reads what the frozen
embedding + spatial encoder computed once per stored view, and the step runs only the
model's trainable part (adapter + temporal encoder + head). The trainer and the
evaluation ask the run's source for its dataset info, iterators and model part, so the
two routes share everything else: optimizer, step, state, checkpoints, logs.
"""

from absl import logging

import data_pipelines
from data_pipelines import feature_cache
from data_pipelines import reader
from vivit_adapter import models
from vivit_adapter.features import manifest as manifest_lib


class VideoSource:
  """Clips decoded from the dataset's video shards; the step runs the whole model."""
  part = models.WHOLE

  def __init__(self, config):
    self.config = config
    self.info = data_pipelines.dataset_info(config.dataset)

  def train_iterator(self, batch_size: int, seed: int, state=None):
    return data_pipelines.make_train_iterator(self.config.dataset, batch_size=batch_size,
                                              seed=seed, state=state)

  def eval_iterator(self, split: str, batch_size: int):
    return data_pipelines.make_eval_iterator(self.config.dataset, split=split,
                                             batch_size=batch_size)

  def check_params(self, params, frozen) -> None:
    del params, frozen  # video needs no check: the frozen part runs every step


class CachedSource:
  """Stored frozen features; the step runs the model's trainable part only."""
  part = models.TRAINABLE_PART

  def __init__(self, config):
    self.config = config
    self.dir = config.feature_cache.dir
    self.manifest = feature_cache.read_manifest(self.dir)
    feature_cache.require_complete(self.dir, self.manifest, ['train'])
    splits = self.manifest['splits']
    sizes = {s: (reader.count_records(feature_cache.shard_paths(
        self.dir, s, splits[s]['num_shards'])) if s in splits else 0)
             for s in feature_cache.SPLITS}
    self.info = data_pipelines.DatasetInfo(
        num_classes=int(self.manifest['num_classes']),
        num_train_examples=sizes['train'], num_eval_examples=sizes['eval'],
        num_test_examples=sizes['test'], label_names=self.manifest.get('label_names'))

  def train_iterator(self, batch_size: int, seed: int, state=None):
    return feature_cache.make_train_iterator(
        self.dir, self.manifest, batch_size=batch_size, seed=seed, state=state,
        shuffle_buffer=self.config.dataset.shuffle_buffer)

  def eval_iterator(self, split: str, batch_size: int):
    return feature_cache.make_eval_iterator(self.dir, self.manifest, split, batch_size)

  def check_params(self, params, frozen) -> None:
    """Refuses a cache made from other frozen parameters or settings (one line)."""
    import jax  # pylint: disable=g-import-not-at-top
    from vivit_adapter.train_lib import optimizers  # pylint: disable=g-import-not-at-top
    host = jax.device_get(optimizers.split_params(params, frozen)[1])
    model = self.config.model
    want = manifest_lib.expected(self.config, params_hash=manifest_lib.frozen_params_hash(
        host, list(frozen)), kind=manifest_lib.feature_kind(
            model.adapter.type, model.trainable_spatial_layers))
    manifest_lib.check(self.dir, self.manifest, want, self.config.model.adapter.type,
                       rebuild=manifest_lib.rebuild_command(self.config))
    logging.info('Feature cache %s matches this run (frozen parameters sha256 %s...).',
                 self.dir, want['frozen_params_sha256'][:12])


def make_source(config):
  """The run's source: a feature cache when config.feature_cache.dir is set."""
  return CachedSource(config) if config.feature_cache.dir else VideoSource(config)


__all__ = ['VideoSource', 'CachedSource', 'make_source']
