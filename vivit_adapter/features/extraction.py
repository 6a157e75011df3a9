"""Extraction: the frozen tubelet embedding + spatial encoder run once per clip and view
(with the spatial dial, the frozen layers below it: docs/design.md §2d).

For each split, every source shard becomes one cache shard (`data_pipelines.feature_cache`
names and formats them). Each process extracts the source shards it would read in
training (the same per-host split) on its own devices, and a shard is written under a
temporary name and renamed when whole: a killed extraction, rerun with the same command,
skips the finished shards and redoes the rest, drawing the same random views.
"""

import dataclasses
import errno
import os
import shutil
import time
from typing import Dict, List

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from data_pipelines import feature_cache
from data_pipelines import fs
from data_pipelines import reader
from vivit_adapter import models
from vivit_adapter.features import manifest as manifest_lib

STORE_DTYPES = {'bfloat16': jnp.bfloat16, 'float32': jnp.float32}


@dataclasses.dataclass(frozen=True)
class Plan:
  """One split's work on this process: its source shards and the views per video."""
  split: str
  sources: List[str]  # every source shard of the split, in order
  mine: List[int]  # indices of the shards this process extracts
  views: int  # stored views per video
  num_videos: int  # videos in this process's shards (records, bad ones included)


def local_mesh() -> jax.sharding.Mesh:
  """This process's devices only: extraction needs no collective, so processes never
  wait for each other and each writes its own shards at its own pace."""
  return jax.sharding.Mesh(np.array(jax.local_devices()), ('data',))


def frozen_forward(model, mesh, store_dtype: str):
  """Jitted `(params, video) -> stored features`, the batch split over `mesh`."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))

  def forward(params, video):
    out = model.apply({'params': params}, video, train=False, part=models.FROZEN_PART)
    return out.astype(STORE_DTYPES[store_dtype])

  return jax.jit(forward, in_shardings=(replicated, batch), out_shardings=batch)


def plan_split(ds_cfg, split: str, views: int, process_index: int,
               process_count: int) -> Plan:
  sources = reader.make_source(ds_cfg, split).files
  mine = list(range(process_index, len(sources), process_count))
  if not mine:
    raise ValueError(f'The {split} table has {len(sources)} shard(s) but there are '
                     f'{process_count} processes; each process needs at least one.')
  num_videos = reader.count_records([sources[i] for i in mine])
  return Plan(split, sources, mine, views, num_videos)


def check_disk(cache_dir: str, plans: List[Plan], view_shape, dtype: str) -> int:
  """Prints the size the cache will take; raises OSError when the disk cannot hold it."""
  need = sum(feature_cache.disk_bytes_needed(p.num_videos, p.views, view_shape, dtype)
             for p in plans)
  per_view = int(np.prod(view_shape)) * (2 if dtype == 'bfloat16' else 4)
  print(f'Feature cache: {need / 2**30:.3f} GiB on this process '
        f'({", ".join(f"{p.split}: {p.num_videos} videos x {p.views} views" for p in plans)};'
        f' {per_view} B per view of shape {tuple(view_shape)} {dtype}).', flush=True)
  if fs.is_url(cache_dir):
    return need  # an object store: no local free-space figure to check against
  free = shutil.disk_usage(_existing_parent(cache_dir)).free
  if free < need:
    # With its errno, so that the program exits cli.IO_ERROR, not as a bug.
    raise OSError(errno.ENOSPC, f'the cache needs {need / 2**30:.3f} GiB but only '
                  f'{free / 2**30:.3f} GiB are free (fewer --views or a pooled adapter '
                  'need less)', cache_dir)
  return need


def _existing_parent(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def _batches(dataset, videos_per_batch: int):
  """Lists of elements, `videos_per_batch` at a time (the last one may be shorter)."""
  chunk = []
  for el in dataset:
    chunk.append({k: v.numpy() for k, v in el.items()})
    if len(chunk) == videos_per_batch:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _run_forward(forward, params, inputs: np.ndarray, clips_per_batch: int) -> np.ndarray:
  """(n, V, ...) views -> (n, V, ...) features, padded to one compiled batch shape."""
  n, v = inputs.shape[:2]
  flat = inputs.reshape((n * v,) + inputs.shape[2:])
  pad = clips_per_batch - flat.shape[0]
  if pad:
    flat = np.concatenate([flat, np.zeros((pad,) + flat.shape[1:], flat.dtype)])
  out = np.asarray(jax.device_get(forward(params, flat)))[:n * v]
  return out.reshape((n, v) + out.shape[1:])


def batch_clips(videos_per_batch: int, views: int) -> int:
  """Clips per forward pass: one compiled shape per split, split evenly over the local
  devices."""
  devices = jax.local_device_count()
  return -(-videos_per_batch * views // devices) * devices


def _compile_ahead(forward, params, ds_cfg, plans: List[Plan], videos_per_batch: int):
  """Compiles the forward pass for every batch shape before the clock starts: the
  extraction time, like the trainer's train_time_s, excludes compilation."""
  clip = (ds_cfg.num_frames, ds_cfg.crop_size, ds_cfg.crop_size, 3)
  for clips in sorted({batch_clips(videos_per_batch, p.views) for p in plans}):
    jax.block_until_ready(forward(params, np.zeros((clips,) + clip, np.uint8)))


def extract_shard(plan: Plan, index: int, path: str, dataset, forward, params, *,
                  videos_per_batch: int, bar, bad: List[str]) -> int:
  """Writes one cache shard from one source shard; returns the videos written."""
  clips_per_batch = batch_clips(videos_per_batch, plan.views)
  with feature_cache.ShardWriter(path) as writer:
    for chunk in _batches(dataset, videos_per_batch):
      good = [el for el in chunk if not el['bad']]
      for el in chunk:
        if el['bad']:
          where = f'{plan.sources[index]} record {int(el["index"])}'
          if plan.split != 'train':
            raise reader.BadDataError(
                f'Bad record in the {plan.split} data: {where}. Every {plan.split} '
                'example must count; fix or remove it (`python -m data_pipelines.validate`).')
          logging.warning('Skipping bad training record: %s', where)
          bad.append(where)
      if good:
        feats = _run_forward(forward, params, np.stack([el['inputs'] for el in good]),
                             clips_per_batch)
        for el, f in zip(good, feats):
          writer.write(list(f), int(el['label']),
                       f'{os.path.basename(plan.sources[index])}:{int(el["index"])}')
      bar.update(len(chunk) * plan.views)
  return writer.num_written


def extract(cache_dir: str, plans: List[Plan], ds_cfg, forward, params, *, seed: int,
            num_classes: int, videos_per_batch: int) -> Dict[str, Dict]:
  """Extracts every unfinished shard of `plans`; returns per-split counts of this run
  and its 'seconds' and 'cpu_seconds' (wall, and CPU of all this process's threads:
  reading, decoding, the forward passes and writing; compilation excluded)."""
  todo = [(p, i) for p in plans for i in p.mine
          if not fs.exists(_shard_path(cache_dir, p, i))]
  total = sum(p.num_videos * p.views for p in plans)
  done = total - sum(reader.count_records([p.sources[i]]) * p.views for p, i in todo)
  stats = {p.split: {'written': 0, 'skipped_shards': len(p.mine), 'bad': []} for p in plans}
  if todo:
    _compile_ahead(forward, params, ds_cfg, [p for p, _ in todo], videos_per_batch)
  start = (time.time(), time.process_time())
  with tqdm.tqdm(total=total, initial=done, unit='clip', desc='extract',
                 dynamic_ncols=True) as bar:
    for plan, i in todo:
      _remove_stale_temporaries(_shard_path(cache_dir, plan, i))
      dataset = feature_cache.extraction_clips(ds_cfg, plan.split, plan.sources[i], i,
                                               plan.views, seed, num_classes)
      stats[plan.split]['written'] += extract_shard(
          plan, i, _shard_path(cache_dir, plan, i), dataset, forward, params,
          videos_per_batch=videos_per_batch, bar=bar, bad=stats[plan.split]['bad'])
      stats[plan.split]['skipped_shards'] -= 1
  stats['seconds'] = time.time() - start[0]
  stats['cpu_seconds'] = time.process_time() - start[1]
  return stats


def _remove_stale_temporaries(path: str) -> None:
  """A process killed mid-shard (kill -9, a lost VM) leaves `path.tmp-<pid>` behind;
  only this process writes `path`, so what is there is stale."""
  for tmp in fs.glob(f'{path}.tmp-*'):
    fs.remove(tmp)


def _shard_path(cache_dir: str, plan: Plan, index: int) -> str:
  return os.path.join(cache_dir, feature_cache.shard_name(plan.split, index,
                                                          len(plan.sources)))




# ----------------------------------------------------------------------------------------
# What a run's config asks for, and the manifest it writes.
# ----------------------------------------------------------------------------------------

def split_views(config, split: str, views: int) -> int:
  """Stored views per video: K augmented for train, the centre view for eval, every
  test view for test."""
  if split == 'train':
    return views
  return 1 if split == 'eval' else config.dataset.num_test_clips * config.dataset.num_test_crops


def available_splits(config, splits) -> List[str]:
  """The requested splits whose tables exist; train must."""
  out = []
  for split in splits:
    try:
      reader.make_source(config.dataset, split)
    except FileNotFoundError:
      if split == 'train':
        raise
      logging.warning('No %s table (%s): not extracted.', split,
                      config.dataset[f'{split}_table'])
      continue
    out.append(split)
  return out


def build_manifest(config, info, params, frozen, *, views: int, dtype: str,
                   view_shapes: Dict[str, tuple], plans: List[Plan], command: str) -> Dict:
  """What the stage-2 check needs (manifest.expected) plus what a reader needs."""
  want = manifest_lib.expected(
      config, params_hash=manifest_lib.frozen_params_hash(params, list(frozen)),
      kind=manifest_lib.feature_kind(config.model.adapter.type,
                                     config.model.trainable_spatial_layers))
  return dict(
      want, views=views, dtype=dtype, seed=config.rng_seed,
      num_classes=info.num_classes, label_names=info.label_names,
      init_from={'checkpoint_path': config.init_from.checkpoint_path,
                 'checkpoint_format': config.init_from.checkpoint_format,
                 'step': config.init_from.step},
      splits={p.split: {'num_shards': len(p.sources), 'views_per_video': p.views,
                        'view_shape': list(view_shapes[p.split])} for p in plans},
      command=command)


def check_existing(cache_dir: str, manifest: Dict) -> None:
  """A cache directory holds one cache: refuses to mix in views of another run."""
  try:
    have = manifest_lib.with_implicit_keys(feature_cache.read_manifest(cache_dir))
  except feature_cache.CacheError:
    return
  want = {k: v for k, v in manifest.items() if k not in ('command', 'splits')}
  # A split extracted before (say train first, eval and test later) must match too.
  common = set(manifest['splits']) & set(have.get('splits', {}))
  want['splits'] = {s: manifest['splits'][s] for s in common}
  diffs = manifest_lib.differences(want, have)
  if diffs:
    raise feature_cache.CacheError(
        f'{cache_dir} already holds a feature cache made differently '
        f'({"; ".join(diffs[:6])}). Choose another --cache_dir, or delete that one.')
  manifest['splits'] = {**have.get('splits', {}), **manifest['splits']}
