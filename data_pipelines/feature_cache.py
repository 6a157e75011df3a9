"""A stage-2 feature cache on disk: what the frozen spatial encoder computed, once per view.

Stage 2 freezes the tubelet embedding and the spatial encoder, so their output for a
given input view is a pure function of the view. `vivit_adapter.extract_features` runs
them once per clip and view and stores the result here; stage 2 then trains from these
files at the cost of the adapter and the temporal encoder alone.

Layout of a cache directory (every file is written under a temporary name and renamed
when complete, so a file with its final name is always whole):

  manifest.json                       what made the cache; stage 2 checks it
  train-00003-of-00016.tfrecord       one cache shard per source shard of the split
  eval-00000-of-00001.tfrecord
  test-00000-of-00001.tfrecord

Format: TFRecord files of `tf.train.Example`s, one per video, with
  'views'  BytesList: one `tf.io.serialize_tensor` TensorProto per stored view
           (train: K augmented views; eval: the centre view; test: the V test views);
  'label'  Int64List: the class;
  'source' BytesList: '<source shard>:<record index>' (where the video came from).
Why TFRecord + TensorProto: tf.data reads it with the same per-host file split,
interleave and shuffling as the video shards, TensorProto is TensorFlow's own array
serialisation (dtype and shape inside; bfloat16 included), and no new dependency is needed.

Nothing here knows about models: the manifest's content is decided by the caller.
"""

import functools
import json
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from data_pipelines import cli
from data_pipelines import fs
from data_pipelines import reader
from data_pipelines import tf_runtime
from data_pipelines import train_stream
from data_pipelines import video_ops

tf = tf_runtime.import_tensorflow()

MANIFEST_FILE = 'manifest.json'
FORMAT_VERSION = 1
SPLITS = ('train', 'eval', 'test')
DTYPES = {'bfloat16': tf.bfloat16, 'float32': tf.float32}
_TAG_VIEW = 11  # keeps the view-choice stream apart from the reader's streams
_TAG_EXTRACT = 12  # the augmentation stream of extraction views


class CacheError(cli.UserError, RuntimeError):
  """A feature cache that is missing, incomplete, corrupt or made for another model
  (a usage error: the message names the command that makes the right one)."""


# ----------------------------------------------------------------------------------------
# Names, manifest and atomic writes.
# ----------------------------------------------------------------------------------------

def shard_name(split: str, index: int, count: int) -> str:
  return f'{split}-{index:05d}-of-{count:05d}.tfrecord'


def shard_paths(cache_dir: str, split: str, count: int) -> List[str]:
  return [os.path.join(cache_dir, shard_name(split, i, count)) for i in range(count)]


def write_manifest(cache_dir: str, manifest: Dict) -> str:
  fs.makedirs(cache_dir)
  path = os.path.join(cache_dir, MANIFEST_FILE)
  fs.atomic_write(path, json.dumps(manifest, indent=2, sort_keys=True) + '\n')
  return path


def read_manifest(cache_dir: str) -> Dict:
  path = os.path.join(cache_dir, MANIFEST_FILE)
  if not fs.exists(path):
    raise CacheError(f'{path} does not exist: {cache_dir!r} is not a feature cache (make '
                     'one with `python -m vivit_adapter.extract_features`).')
  with fs.open(path) as f:
    return json.load(f)


def missing_shards(cache_dir: str, split: str, count: int) -> List[str]:
  return [p for p in shard_paths(cache_dir, split, count) if not fs.exists(p)]


def require_complete(cache_dir: str, manifest: Dict, splits: Sequence[str]) -> None:
  """Raises CacheError naming the missing shards and the command that completes them."""
  problems = []
  for split in splits:
    info = manifest['splits'].get(split)
    if info is None:
      problems.append(f'split {split!r} was not extracted')
      continue
    missing = missing_shards(cache_dir, split, info['num_shards'])
    if missing:
      names = ', '.join(os.path.basename(p) for p in missing[:5])
      more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
      problems.append(f'{len(missing)} of {info["num_shards"]} {split} shards are missing '
                      f'({names}{more})')
  if problems:
    raise CacheError(f'Feature cache {cache_dir} is incomplete: {"; ".join(problems)}. '
                     f'Finish it with: {manifest.get("command", "python -m vivit_adapter.extract_features ...")}')


class ShardWriter:
  """Writes one cache shard under a temporary name; renames it only when complete.

  On any exception (a full disk included) the temporary file is removed, so a shard
  with its final name is always whole and a restarted extraction redoes the shard.
  """

  def __init__(self, path: str):
    self.path = path
    self._tmp = f'{path}.tmp-{os.getpid()}'
    self._writer = None
    self.num_written = 0

  def __enter__(self):
    self._writer = tf.io.TFRecordWriter(self._tmp)
    return self

  def write(self, views: Sequence[np.ndarray], label: int, source: str) -> None:
    self._writer.write(make_example(views, label, source))
    self.num_written += 1

  def __exit__(self, exc_type, exc, tb):
    try:
      self._writer.close()
    except Exception:  # pylint: disable=broad-except
      if exc_type is None:
        raise
    if exc_type is None:
      fs.rename(self._tmp, self.path)
    elif fs.exists(self._tmp):
      fs.remove(self._tmp)
    return False


def make_example(views: Sequence[np.ndarray], label: int, source: str) -> bytes:
  """One video's stored views as a serialized tf.train.Example."""
  serialized = [tf.io.serialize_tensor(tf.constant(v)).numpy() for v in views]
  example = tf.train.Example(features=tf.train.Features(feature={
      'views': tf.train.Feature(bytes_list=tf.train.BytesList(value=serialized)),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      'source': tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
  }))
  # deterministic=True: protobuf map order is otherwise free, and a restarted
  # extraction must write the very same bytes.
  return example.SerializeToString(deterministic=True)


def parse_example(record):
  """Serialized record -> (views string vector, label int64 scalar, source string)."""
  parsed = tf.io.parse_single_example(record, {
      'views': tf.io.VarLenFeature(tf.string),
      'label': tf.io.FixedLenFeature([], tf.int64),
      'source': tf.io.FixedLenFeature([], tf.string, default_value=''),
  })
  return tf.sparse.to_dense(parsed['views']), parsed['label'], parsed['source']


def disk_bytes_needed(num_videos: int, views_per_video: int, view_shape: Sequence[int],
                      dtype: str) -> int:
  """Bytes the stored views take (TensorProto headers and record framing: ~1%, added)."""
  per_view = int(np.prod(view_shape)) * (2 if dtype == 'bfloat16' else 4)
  return int(num_videos * views_per_video * per_view * 1.01) + 4096


# ----------------------------------------------------------------------------------------
# The raw side of extraction: source clips of one source shard, in record order.
# ----------------------------------------------------------------------------------------

def extraction_clips(ds_cfg, split: str, shard: str, shard_index: int, num_views: int,
                     seed: int, num_classes: int) -> tf.data.Dataset:
  """The views to extract from one source shard, record by record.

  Train: `num_views` augmented clips per record (video_ops.train_clip), view k drawn
  from (seed, k, shard index, record index) so a restarted extraction draws the same
  views. Eval: the centre clip. Test: the V = clips x crops test views.
  Elements: {'inputs': (num_views or V or 1, T, H, W, 3), 'label', 'index', 'bad'}.
  Bad records come flagged (`bad`), as the reader flags them.
  """
  base_seed = train_stream.base_seed(seed, shard_index)
  if split == 'train':
    def transform(frames, el):
      return tf.stack([video_ops.train_clip(
          frames, ds_cfg, train_stream.fold(base_seed, _TAG_EXTRACT, k, el['index']))
                       for k in range(num_views)])
    count = num_views
  elif split == 'eval':
    transform = lambda frames, el: video_ops.eval_clip(frames, ds_cfg)[None]
    count = 1
  else:
    transform = lambda frames, el: video_ops.test_views(frames, ds_cfg)
    count = video_ops.num_test_views(ds_cfg)
  source = reader.make_source(ds_cfg, split)
  shape = (count, ds_cfg.num_frames, ds_cfg.crop_size, ds_cfg.crop_size, 3)
  records = reader.file_records(shard)  # a damaged shard's tail is one bad record
  ds = reader.decode_records(records, source, num_classes, transform, shape,
                             lambda el: tf.constant('bad'))
  return ds.with_options(train_stream.deterministic_options())


# ----------------------------------------------------------------------------------------
# Reading: the training stream (one random stored view per video and epoch) and eval.
# ----------------------------------------------------------------------------------------

def _view_fn(manifest: Dict, split: str, choose: Optional[Callable]):
  """record -> {'inputs', 'label', ...}: one stored view (`choose`), or all of them."""
  info = manifest['splits'][split]
  dtype, shape = DTYPES[manifest['dtype']], list(info['view_shape'])

  def one(serialized):
    return tf.ensure_shape(tf.io.parse_tensor(serialized, dtype), shape)

  def parse(el):
    views, label, _ = parse_example(el['record'])
    if choose is None:  # every stored view (test), stacked
      inputs = tf.ensure_shape(tf.map_fn(one, views, fn_output_signature=dtype),
                               [info['views_per_video']] + shape)
    else:  # one view: only its bytes are parsed
      inputs = one(views[choose(el, tf.shape(views)[0])])
    out = {k: el[k] for k in ('epoch', 'position') if k in el}
    out.update(inputs=inputs, label=tf.cast(label, tf.int32))
    return out
  return parse


class CacheTrainIterator(train_stream.StreamIterator):
  """Infinite, resumable training batches from a cache (the TrainIterator interface).

  Epoch e visits every video of this host's shards once, in the training stream's
  shuffled, position-numbered order (train_stream.epochs), and takes one of the video's
  K stored views, drawn from (seed, epoch, position). `state` resumes bit for bit, as
  the video reader's does.
  """

  def __init__(self, cache_dir: str, manifest: Dict, batch_size: int, seed: int,
               state: Optional[dict], process_index: int, process_count: int,
               shuffle_buffer: int = 1024):
    info = manifest['splits']['train']
    files = shard_paths(cache_dir, 'train', info['num_shards'])
    self._files = train_stream.host_files(files, process_index, process_count, 'cache train')
    self._state = train_stream.initial_state(seed, process_index, process_count, state)
    self.num_bad = 0
    base_seed = train_stream.base_seed(seed, process_index)
    self._open(self._dataset(manifest, batch_size, base_seed, shuffle_buffer))

  def __next__(self) -> Dict[str, np.ndarray]:
    batch = self._next_batch()
    n = len(batch['label'])
    self._advance(batch, num_seen=self._state['num_seen'] + n)
    return {'inputs': batch['inputs'], 'label': batch['label'],
            'batch_mask': np.ones((n,), np.float32)}

  def _dataset(self, manifest, batch_size, base_seed, shuffle_buffer) -> tf.data.Dataset:
    read = functools.partial(reader.interleaved_records, cycle_length=min(8, len(self._files)))

    def choose(el, k):
      seed = train_stream.fold(base_seed, _TAG_VIEW, el['epoch'], el['position'])
      return tf.random.stateless_uniform([], seed, 0, tf.cast(k, tf.int32), tf.int32)

    parse = _view_fn(manifest, 'train', choose)
    ds = train_stream.epochs(self._files, self._state, base_seed, shuffle_buffer, read)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
    return ds.with_options(train_stream.deterministic_options())


def make_train_iterator(cache_dir: str, manifest: Dict, batch_size: int, seed: int,
                        state: Optional[dict] = None, process_index: Optional[int] = None,
                        process_count: Optional[int] = None,
                        shuffle_buffer: int = 1024) -> CacheTrainIterator:
  process_index, process_count = train_stream.resolve_process(process_index, process_count)
  require_complete(cache_dir, manifest, ['train'])
  return CacheTrainIterator(cache_dir, manifest, batch_size, seed, state, process_index,
                            process_count, shuffle_buffer)


def make_eval_iterator(cache_dir: str, manifest: Dict, split: str, batch_size: int,
                       process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
  """One pass over this host's cached `split`, padded like the video eval iterator.

  'eval' gives inputs (B, T', ...) (the centre view); 'test' gives (B, V, T', ...).
  """
  process_index, process_count = train_stream.resolve_process(process_index, process_count)
  require_complete(cache_dir, manifest, [split])
  info = manifest['splits'][split]
  files = shard_paths(cache_dir, split, info['num_shards'])
  mine = train_stream.host_files(files, process_index, process_count, f'cache {split}')
  parse = _view_fn(manifest, split, None if split == 'test' else (lambda el, k: 0))
  ds = tf.data.TFRecordDataset(mine).map(lambda r: {'record': r})
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).prefetch(2).with_options(train_stream.deterministic_options())
  num_batches = None
  if process_count > 1:
    largest = max(reader.count_records(train_stream.host_files(files, p, process_count))
                  for p in range(process_count))
    num_batches = -(-largest // batch_size)
  return _padded(ds, batch_size, num_batches)


def _padded(ds, batch_size: int, num_batches: Optional[int]):
  produced = 0
  for batch in ds:
    produced += 1
    yield train_stream.pad({k: v.numpy() for k, v in batch.items()}, batch_size)
  spec = ds.element_spec['inputs']
  empty = train_stream.empty_batch(spec.shape[1:], spec.dtype.as_numpy_dtype, batch_size)
  while num_batches is not None and produced < num_batches:
    produced += 1
    yield empty
