"""The training and evaluation input pipelines on tf.data, for DMVR-format shards and tfds.

Training stream, per host (each host reads its own files; see `host_files`):

  epoch e: host files in an order drawn from (seed, e)
    -> records interleaved from those files
    -> cut into blocks of `shuffle_buffer` records, each block permuted from (seed, e, block)
    -> every record gets its *position* in that order (epoch e, position p)
    -> parse + decode + augment with randomness drawn from (seed, e, p)
    -> bad records are dropped and counted, good ones batched.

The order and the positions are data_pipelines/train_stream.py's, which the feature
cache's training iterator shares. Because every random choice is a function of (seed,
epoch, position), and the position of the record after the last one handed out is known,
`TrainIterator.state` resumes exactly:
the new iterator skips raw (undecoded) records up to that position and continues bit for
bit, however far tf.data had prefetched, and whether or not bad records were dropped.

Decoding never stops the stream: each record is decoded inside a one-element dataset whose
errors are ignored, followed by a placeholder flagged `bad`. That turns an undecodable JPEG,
a missing or out-of-range label, or an empty video into data that can be counted. Reading
never stops it either: a shard that is cut short or damaged (an interrupted copy) yields
its whole records, then one bad record that says where the damage starts (`file_records`).
Training and evaluation skip bad records, count them, and stop once one epoch (one pass)
holds more bad records than config.dataset.max_bad_fraction of its records, and at least
one bad record is allowed (`bad_budget`).
"""

import functools
import json
import os
import re
from typing import Callable, Dict, List, Optional

from absl import logging
import numpy as np

from data_pipelines import cli
from data_pipelines import dmvr_format
from data_pipelines import fs
from data_pipelines import interruptible
from data_pipelines import tf_runtime
from data_pipelines import train_stream
from data_pipelines import video_ops
from data_pipelines.source import DatasetInfo
from data_pipelines.source import Source
from data_pipelines.train_stream import host_files

tf = tf_runtime.import_tensorflow()

SPLITS = ('train', 'eval', 'test')
DATASET_NAMES = ('dmvr', 'tfds')  # DMVR-format TFRecord shards, or a prepared tfds dataset
# config.dataset keys with a fixed set of values -> those values (check_config checks them).
# (config.dataset.normalization is the model's: it normalises the uint8 frames these
# pipelines yield, on the device; vivit_adapter/models/inputs.py owns and checks it.)
DATASET_CHOICES = {'name': DATASET_NAMES}
METADATA_FILE = dmvr_format.METADATA_FILE
LABEL_MAP_FILE = 'label_map.txt'
# config split -> its name in metadata.json's "splits" (the converter's and generator's)
METADATA_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'test'}
# Bytes a TFRecord adds around each record: length (8), its CRC (4), the data's CRC (4).
_TFRECORD_OVERHEAD = 16
_MAX_BAD_EXAMPLES = 10  # bad records kept for the BadDataError message
_TAG_EXAMPLE = 3  # the augmentation stream (train_stream's tags keep theirs apart)
# Where each example of an evaluation batch came from: its shard (str; '' for padding)
# and its record's index in that shard (-1 for padding). Host-side keys, never sent to
# the device; the evaluation's per-video lines name the video with them.
SOURCE_KEYS = ('shard', 'record')


class BadDataError(cli.DataError, RuntimeError):
  """More than config.dataset.max_bad_fraction of the records read are bad."""


def bad_budget(epoch_size: int, max_bad_fraction: float) -> float:
  """How many bad records one epoch (or evaluation pass) of `epoch_size` may hold.

  The rule of training and evaluation alike: a pass stops at its first bad record beyond
  max_bad_fraction of its size. Per pass, not per record read so far: a shuffled epoch
  can bring one bad clip twice in a row (end of one epoch, start of the next), which a
  running fraction would take for 2 in 25. At least one bad record is allowed (unless the
  fraction is 0, which is strict), so a small dataset does not stop on its first one.
  """
  if max_bad_fraction <= 0:
    return 0.
  return max(max_bad_fraction * epoch_size, 1.)


# ----------------------------------------------------------------------------------------
# Records: parsing and checking.
# ----------------------------------------------------------------------------------------

def parse_dmvr(record):
  """A serialized DMVR SequenceExample -> (encoded frames, label or -1)."""
  context, sequence = tf.io.parse_single_sequence_example(
      record,
      context_features={dmvr_format.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, -1)},
      sequence_features={dmvr_format.FRAMES_KEY: tf.io.FixedLenSequenceFeature(
          [], tf.string, allow_missing=True)})
  return sequence[dmvr_format.FRAMES_KEY], context[dmvr_format.LABEL_KEY]


def _checked(frames, label, num_classes: int, problem=''):
  """Asserts the record is usable; the asserts fail the record, not the pipeline."""
  checks = [
      tf.debugging.assert_equal(problem, '', message='damaged file'),
      tf.debugging.assert_greater(tf.shape(frames)[0], 0, message='no frames'),
      tf.debugging.assert_non_negative(label, message='missing or negative label'),
      tf.debugging.assert_less(label, tf.constant(num_classes, tf.int64),
                               message='label out of range'),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(frames), tf.identity(label)


def record_problem(record: bytes, parse: Callable, num_classes: int,
                   decode_all: bool = True) -> str:
  """Says what is wrong with one record, eagerly; '' when nothing is.

  Args:
    record: the serialized record.
    parse: the source's parse function.
    num_classes: labels must lie in [0, num_classes); <= 0 only checks label >= 0.
    decode_all: decode every frame (else only check the structure and label).
  """
  try:
    frames, label = parse(tf.constant(record))
  except (tf.errors.OpError, ValueError) as e:
    return f'not a parsable record ({_first_line(e)})'
  label = int(label.numpy())
  if label == -1:
    return f'missing label ({dmvr_format.LABEL_KEY})'
  if label < 0 or (num_classes > 0 and label >= num_classes):
    return f'label {label} outside [0, {num_classes})'
  if int(tf.shape(frames)[0]) == 0:
    return f'no frames ({dmvr_format.FRAMES_KEY} is empty)'
  return _frames_problem(frames.numpy()) if decode_all else ''


def _frames_problem(encoded: np.ndarray) -> str:
  shape = None
  for i, frame in enumerate(encoded):
    try:
      decoded = tf.io.decode_image(frame, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
      return f'frame {i} of {len(encoded)} does not decode ({_first_line(e)})'
    if shape is None:
      shape = tuple(decoded.shape)
    elif tuple(decoded.shape) != shape:
      return f'frame {i} has shape {tuple(decoded.shape)}, frame 0 has {shape}'
  return ''


def _first_line(error: Exception) -> str:
  """TensorFlow's error text without its op and function decorations."""
  text = getattr(error, 'message', None) or str(error)
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', text)
  text = re.sub(r'\s*\[Op:\w+\]', '', text).strip()
  return text.splitlines()[0][:200] if text else type(error).__name__


def read_record(shard: str, index: int) -> bytes:
  """The raw bytes of record `index` of a TFRecord file."""
  ds = tf.data.TFRecordDataset(shard).skip(index).take(1)
  return next(iter(ds)).numpy()


def _tail_problem(shard, num_read, offset) -> bytes:
  """Why the file does not end where its last whole record ends; b'' when it does."""
  shard, num_read, offset = shard.numpy().decode(), int(num_read), int(offset)
  size = fs.size(shard)
  if size == offset:
    return b''
  return (f'the file is cut short or damaged at byte {offset} of {size}: {num_read} whole '
          f'records were read before it, {size - offset} bytes after it are unreadable '
          '(an interrupted copy? copy the shard again)').encode()


def file_records(path) -> tf.data.Dataset:
  """{'record', 'shard', 'index', 'problem'} for each record of one TFRecord file.

  A file that is cut short or corrupt yields its whole records, then one element whose
  `problem` says where the damage starts and how many records came before it (TFRecord
  reading stops at the first damaged record: what follows cannot be framed). Every other
  element has problem ''. `path` may be a string or a scalar string tensor.
  """
  records = tf.data.TFRecordDataset(path).ignore_errors()
  marked = records.map(lambda r: (r, False)).concatenate(
      tf.data.Dataset.from_tensors((tf.constant(b''), True)))

  def step(totals, item):
    index, offset = totals
    record, end = item
    size = tf.cast(tf.strings.length(record), tf.int64)
    out = {'record': record, 'shard': path, 'index': index, 'offset': offset, 'end': end}
    return (index + 1, offset + size + _TFRECORD_OVERHEAD), out

  def problem(el):
    text = tf.cond(el['end'], lambda: tf.py_function(
        _tail_problem, [el['shard'], el['index'], el['offset']], tf.string),
                   lambda: tf.constant(b''))
    return {'record': el['record'], 'shard': el['shard'], 'index': el['index'],
            'problem': tf.ensure_shape(text, []), 'end': el['end']}

  zero = tf.constant(0, tf.int64)
  ds = marked.scan((zero, zero), step).map(problem)
  ds = ds.filter(lambda el: tf.logical_or(tf.logical_not(el['end']), el['problem'] != ''))
  return ds.map(lambda el: {k: v for k, v in el.items() if k != 'end'})


# ----------------------------------------------------------------------------------------
# Dataset metadata.
# ----------------------------------------------------------------------------------------

def check_config(ds_cfg) -> None:
  """Fails at start, naming the key, on settings the pipeline cannot honour."""
  problems = [f'{key}={ds_cfg[key]!r} must be one of {names}'
              for key, names in DATASET_CHOICES.items() if ds_cfg[key] not in names]
  for key in ('num_frames', 'stride', 'crop_size', 'num_test_clips', 'num_test_crops',
              'shuffle_buffer', 'num_parallel_reads'):
    if ds_cfg[key] < 1:
      problems.append(f'{key}={ds_cfg[key]} must be >= 1')
  if ds_cfg.min_resize < ds_cfg.crop_size:
    problems.append(f'min_resize={ds_cfg.min_resize} must be >= crop_size={ds_cfg.crop_size}')
  if not 0 < ds_cfg.min_scale <= ds_cfg.max_scale:
    problems.append(f'need 0 < min_scale ({ds_cfg.min_scale}) <= max_scale ({ds_cfg.max_scale})')
  if not 0 <= ds_cfg.max_bad_fraction <= 1:
    problems.append(f'max_bad_fraction={ds_cfg.max_bad_fraction} must lie in [0, 1]')
  if ds_cfg.name == 'dmvr':  # an empty name would read base_dir itself as a shard
    problems.extend(f"{split}_table='' names no table" for split in SPLITS
                    if not ds_cfg[f'{split}_table'].strip())
  if ds_cfg.name == 'tfds' and not ds_cfg.tfds_name:
    problems.append("name='tfds' needs tfds_name")
  if problems:
    raise ValueError('Invalid config.dataset: ' + '; '.join(problems) + '.')


def read_metadata(ds_cfg) -> dict:
  path = os.path.join(ds_cfg.base_dir, METADATA_FILE)
  if not ds_cfg.base_dir or not fs.exists(path):
    return {}
  with fs.open(path) as f:
    text = f.read()
  try:
    meta = json.loads(text)
  except ValueError as e:
    raise cli.ConfigError(f'{path} is not valid JSON ({e}); write it again (the converter '
                          'and the synthetic generator do), or delete it: split sizes are '
                          'then counted from the shards.') from e
  if not isinstance(meta, dict):
    raise cli.ConfigError(f'{path} holds a {type(meta).__name__}, not a JSON object; '
                          'write it again, or delete it.')
  return meta


def resolve_num_classes(ds_cfg) -> int:
  """config.dataset.num_classes, else the dataset's metadata; errors when neither has it."""
  if ds_cfg.name == 'tfds':
    from data_pipelines import tfds_reader  # pylint: disable=g-import-not-at-top
    return ds_cfg.num_classes or tfds_reader.tfds_info(ds_cfg).num_classes
  num_classes = ds_cfg.num_classes or int(read_metadata(ds_cfg).get('num_classes', 0))
  if num_classes <= 0:  # one class per line of the label map, if there is one
    path = _label_map_path(ds_cfg)
    num_classes = len(dmvr_format.read_label_map(path)) if fs.exists(path) else 0
  if num_classes <= 0:
    raise cli.ConfigError(
        f'Unknown number of classes: config.dataset.num_classes is 0, and neither '
        f'{os.path.join(ds_cfg.base_dir, METADATA_FILE)!r} nor a label map '
        f'({_label_map_path(ds_cfg)!r}) gives it. Set config.dataset.num_classes.')
  return num_classes


def _label_map_path(ds_cfg) -> str:
  return ds_cfg.label_map or os.path.join(ds_cfg.base_dir, LABEL_MAP_FILE)


def count_records(files: List[str]) -> int:
  """Counts records without parsing them (cached: evaluation asks every epoch)."""
  # Size and modification time in the key: a rewritten table is counted again.
  stats = tuple((f, s.length, s.mtime_nsec) for f, s in
                ((f, tf.io.gfile.stat(f)) for f in files))
  return _count_records(stats)


@functools.lru_cache(maxsize=64)
def _count_records(stats) -> int:
  # As the pipelines read them: a damaged file's tail counts as one (bad) record.
  files = tf.data.Dataset.from_tensor_slices([f for f, _, _ in stats])
  return int(files.flat_map(file_records).reduce(np.int64(0), lambda n, _: n + 1))


def _split_size(ds_cfg, split: str, meta: dict) -> int:
  configured = ds_cfg[f'num_{split}_examples']
  if configured:
    return configured
  if METADATA_SPLITS[split] in meta.get('splits', {}):
    return int(meta['splits'][METADATA_SPLITS[split]])
  try:
    return count_records(make_source(ds_cfg, split).files)
  except FileNotFoundError:
    if split == 'train':
      raise
    logging.warning('No %s table (%s): num_%s_examples = 0.', split,
                    ds_cfg[f'{split}_table'], split)
    return 0


def _label_names(ds_cfg, meta: dict, num_classes: int) -> Optional[List[str]]:
  path = _label_map_path(ds_cfg)
  if ds_cfg.label_map and not fs.exists(path):
    raise FileNotFoundError(f'config.dataset.label_map={path!r} does not exist.')
  if fs.exists(path):  # as predict and the converter read it: no blank, no duplicate
    names = dmvr_format.read_label_map(path)
  elif meta.get('label_names'):
    path, names = os.path.join(ds_cfg.base_dir, METADATA_FILE), list(meta['label_names'])
  else:
    return None
  if len(names) != num_classes:
    raise cli.ConfigError(
        f'{path!r} names {len(names)} classes but the dataset has {num_classes} '
        '(config.dataset.num_classes or metadata.json); make them agree.')
  return names


def dataset_info(ds_cfg) -> DatasetInfo:
  """Class count, split sizes and label names: the config first, then the dataset."""
  check_config(ds_cfg)
  if ds_cfg.name == 'tfds':
    from data_pipelines import tfds_reader  # pylint: disable=g-import-not-at-top
    return tfds_reader.tfds_info(ds_cfg)
  meta = read_metadata(ds_cfg)
  num_classes = resolve_num_classes(ds_cfg)
  return DatasetInfo(
      num_classes=num_classes,
      num_train_examples=_split_size(ds_cfg, 'train', meta),
      num_eval_examples=_split_size(ds_cfg, 'eval', meta),
      num_test_examples=_split_size(ds_cfg, 'test', meta),
      label_names=_label_names(ds_cfg, meta, num_classes))


# ----------------------------------------------------------------------------------------
# Sources and the per-host split.
# ----------------------------------------------------------------------------------------

def make_source(ds_cfg, split: str) -> Source:
  """The records of `split` ('train', 'eval' or 'test'); fails now if there are none."""
  if split not in SPLITS:
    raise ValueError(f'split={split!r} must be one of {SPLITS}.')
  if ds_cfg.name == 'tfds':
    from data_pipelines import tfds_reader  # pylint: disable=g-import-not-at-top
    return tfds_reader.tfds_source(ds_cfg, split)
  table = ds_cfg[f'{split}_table']
  return Source(table=table, files=dmvr_format.expand_table(table, ds_cfg.base_dir),
                parse=parse_dmvr)


def interleaved_records(files, cycle_length: int) -> tf.data.Dataset:
  """`file_records` of files in the given order, interleaved."""
  return tf.data.Dataset.from_tensor_slices(files).interleave(
      file_records, cycle_length=cycle_length, block_length=1, num_parallel_calls=cycle_length,
      deterministic=True)


# ----------------------------------------------------------------------------------------
# Decode-or-flag: a bad record becomes a flagged placeholder instead of an error.
# ----------------------------------------------------------------------------------------

def _decode_or_flag(source: Source, num_classes: int, transform: Callable,
                    output_shape, on_bad: Callable) -> Callable:
  """Builds element -> one-element dataset, decoded or a placeholder flagged `bad`.

  Args:
    source: gives the parse function.
    num_classes: for the label check.
    transform: (encoded frames, element) -> uint8 inputs of `output_shape`.
    output_shape: static shape of one example's inputs.
    on_bad: element -> reason string tensor (may log as a side effect).
  """
  keep = ('shard', 'index', 'epoch', 'position')

  def good(el):
    frames, label = _checked(*source.parse(el['record']), num_classes,
                             el['problem'] if 'problem' in el else '')
    out = {k: el[k] for k in keep if k in el}
    out.update(inputs=transform(frames, el), label=tf.cast(label, tf.int32),
               bad=tf.constant(False), reason=tf.constant(''))
    return out

  def bad(el):
    out = {k: el[k] for k in keep if k in el}
    out.update(inputs=tf.zeros(output_shape, tf.uint8), label=tf.constant(-1, tf.int32),
               bad=tf.constant(True), reason=on_bad(el))
    return out

  def per_element(el):
    single = tf.data.Dataset.from_tensors(el)
    return single.map(good).ignore_errors().concatenate(single.map(bad)).take(1)

  return per_element


def decode_records(ds: tf.data.Dataset, source: Source, num_classes: int,
                   transform: Callable, output_shape, on_bad: Callable) -> tf.data.Dataset:
  """Each element of `ds` decoded, or flagged `bad` (`_decode_or_flag`); in order."""
  per_element = _decode_or_flag(source, num_classes, transform, output_shape, on_bad)
  # One-element datasets decoded in parallel, in order.
  return ds.interleave(per_element, cycle_length=tf.data.AUTOTUNE, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------

def consecutive_bad_limit(epoch_size: int) -> int:
  """Bad records in a row beyond which a stream stops: a whole epoch's worth without a
  good one. Without it, max_bad_fraction=1.0 on a table whose every record is bad drops
  every record forever: the stream neither yields nor stops. (The epoch size is checked
  against the files at start-up, so a stale metadata.json cannot stretch it.)"""
  return max(epoch_size - 1, 0)


def _count_and_filter(ds, state: Dict[str, int], budget: float, epoch_size: int):
  """Adds running num_seen/num_bad, this epoch's epoch_bad and run_bad (bad records in a
  row); drops bad records unless the epoch's `bad_budget` is exceeded or more than
  `consecutive_bad_limit` came in a row.

  A bad record that crosses the threshold is kept, so that the Python side sees it and
  raises even when no good record follows. (A resumed run counts its epoch's bad records
  afresh: the budget restarts, which only errs on the lenient side.)
  """
  limit = consecutive_bad_limit(epoch_size)

  def count(totals, el):
    seen, bad, epoch, epoch_bad, run_bad = totals
    is_bad = tf.cast(el['bad'], tf.int64)
    epoch_bad = tf.where(tf.equal(el['epoch'], epoch), epoch_bad, 0) + is_bad
    run_bad = (run_bad + 1) * is_bad
    totals = (seen + 1, bad + is_bad, el['epoch'], epoch_bad, run_bad)
    return totals, dict(el, num_seen=totals[0], num_bad=totals[1], epoch_bad=epoch_bad,
                        run_bad=run_bad)

  def keep(el):
    tripped = tf.logical_or(tf.cast(el['epoch_bad'], tf.float64) > budget,
                            el['run_bad'] > limit)
    return tf.logical_or(tf.logical_not(el['bad']), tripped)

  zero = tf.constant(0, tf.int64)
  initial = (tf.constant(state['num_seen'], tf.int64), tf.constant(state['num_bad'], tf.int64),
             tf.constant(state['epoch'], tf.int64), zero, zero)
  return ds.scan(initial, count).filter(keep)


class TrainIterator(train_stream.StreamIterator):
  """Infinite iterator of training batches with a resumable `state`.

  Attributes:
    state: JSON-serialisable dict; `make_train_iterator(..., state=state)` continues with
      the batch this iterator returns next.
    num_seen: records read on this host up to the last example handed out.
    num_bad: of those, the bad ones (skipped).
  """

  def __init__(self, ds_cfg, batch_size: int, seed: int, state: Optional[dict],
               process_index: int, process_count: int):
    check_config(ds_cfg)
    self._cfg = ds_cfg
    self._source = make_source(ds_cfg, 'train')
    self._files = host_files(self._source.files, process_index, process_count,
                             self._source.table)
    self._state = train_stream.initial_state(seed, process_index, process_count, state)
    self._num_classes = resolve_num_classes(ds_cfg)
    # This host's records per epoch, for the bad-record budget: its share of the split's
    # size as metadata.json (or config) gives it; counted only when neither does.
    self.epoch_size = max(-(-_split_size(ds_cfg, 'train', read_metadata(ds_cfg)) //
                            process_count), 1)
    self.bad_examples: List[str] = []  # up to _MAX_BAD_EXAMPLES, each record once
    self._described = set()
    _require_records(self._files, self._source.table)
    self._open(self._dataset(batch_size, seed, process_index))

  @property
  def num_bad(self) -> int:
    return self._state['num_bad']

  def __next__(self) -> Dict[str, np.ndarray]:
    batch = self._next_batch()
    if batch['bad'].any():
      raise self._too_many_bad(batch)
    self._advance(batch, num_seen=int(batch['num_seen'][-1]),
                  num_bad=int(batch['num_bad'][-1]))
    return {'inputs': batch['inputs'], 'label': batch['label'],
            'batch_mask': np.ones(batch['label'].shape, np.float32)}

  def _dataset(self, batch_size: int, seed: int, process_index: int) -> tf.data.Dataset:
    cfg, start = self._cfg, self._state
    base_seed = train_stream.base_seed(seed, process_index)
    read = functools.partial(interleaved_records,
                             cycle_length=min(cfg.num_parallel_reads, len(self._files)))

    def transform(frames, el):
      return video_ops.train_clip(
          frames, cfg, train_stream.fold(base_seed, _TAG_EXAMPLE, el['epoch'], el['position']))

    ds = train_stream.epochs(self._files, start, base_seed, cfg.shuffle_buffer, read)
    ds = decode_records(ds, self._source, self._num_classes, transform,
                        (cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), self._log_bad)
    ds = _count_and_filter(ds, start, bad_budget(self.epoch_size, cfg.max_bad_fraction),
                           self.epoch_size)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
    return ds.with_options(train_stream.deterministic_options())

  def _log_bad(self, el):
    def describe(record, shard, index, problem):
      where = f'{shard.numpy().decode()} record {int(index)}'
      reason = _reason(record, problem, self._source.parse, self._num_classes)
      if where not in self._described:  # a record is bad in every epoch: log it once
        logging.warning('Skipping bad training record: %s: %s', where, reason)
        self._described.add(where)
        if len(self.bad_examples) < _MAX_BAD_EXAMPLES:
          self.bad_examples.append(f'{where}: {reason}')
      return reason
    return tf.py_function(describe, [el['record'], el['shard'], el['index'],
                                     el['problem']], tf.string)

  def _too_many_bad(self, batch) -> BadDataError:
    i = int(np.argmax(batch['bad']))
    budget = bad_budget(self.epoch_size, self._cfg.max_bad_fraction)
    if batch['epoch_bad'][i] <= budget:  # tripped by the run of bad records
      return no_good_records_error(int(batch['run_bad'][i]), self.epoch_size, self._files,
                                   self._cfg, self._source.table, self.bad_examples)
    return bad_data_error(f'epoch {int(batch["epoch"][i])} of training',
                          int(batch['epoch_bad'][i]), self.epoch_size, self._cfg,
                          self._source.table, self.bad_examples)


def _reason(record, problem, parse, num_classes: int) -> str:
  """What is wrong with a record the pipeline flagged (eager tensors in, text out)."""
  problem = problem.numpy().decode()
  return problem or record_problem(record.numpy(), parse, num_classes) or (
      'decoding or augmenting failed')


def _validate_command(table: str, ds_cfg) -> str:
  path = table if table.startswith('tfds:') else os.path.join(
      fs.abspath(ds_cfg.base_dir) if ds_cfg.base_dir else '', table)
  return f'python -m data_pipelines.validate --tables={path}'


def bad_data_error(what: str, bad: int, size: int, ds_cfg, table: str,
                   examples: List[str]) -> BadDataError:
  """One line: how many, the threshold, the first example and the command listing all."""
  first = f' First: {examples[0]}.' if examples else ''
  return BadDataError(
      f'{bad} bad records already in {what} on this host, more than '
      f'config.dataset.max_bad_fraction={ds_cfg.max_bad_fraction} of its {size} records '
      f'allow (each is logged above).{first} List them all with `{_validate_command(table, ds_cfg)}`, then fix or '
      'remove them, or raise config.dataset.max_bad_fraction.')


def no_good_records_error(run: int, size: int, files: List[str], ds_cfg, table: str,
                          examples: List[str]) -> BadDataError:
  """One line: a run of bad records with no good one, the files, the first reason."""
  shown = ', '.join(files[:3]) + (f' and {len(files) - 3} more' if len(files) > 3 else '')
  first = f' First: {examples[0]}.' if examples else ''
  return BadDataError(
      f'{run} bad records in a row and not one good record (this host reads {size} '
      f'records per epoch, from {shown}): the stream cannot yield a batch.{first} List '
      f'them all with `{_validate_command(table, ds_cfg)}`, then fix or remove them.')


def _require_records(files: List[str], table: str) -> None:
  # An infinite stream over files without records would spin forever.
  if not any(True for _ in tf.data.Dataset.from_tensor_slices(files).flat_map(
      file_records).take(1)):
    raise ValueError(f'Table {table!r}: the files of this host ({files[:3]}...) hold no '
                     'records.')


def make_train_iterator(ds_cfg, batch_size: int, seed: int, state: Optional[dict] = None,
                        process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> TrainIterator:
  """The infinite, resumable training iterator of this host (see TrainIterator).

  Bad records are skipped, counted and logged; more of them in one epoch than
  `bad_budget` allows raises BadDataError (one line: counts, the first, the command that
  lists them all). process_index/process_count default to JAX's.
  """
  process_index, process_count = train_stream.resolve_process(process_index, process_count)
  return TrainIterator(ds_cfg, batch_size, seed, state, process_index, process_count)


# ----------------------------------------------------------------------------------------
# Evaluation and multi-view test.
# ----------------------------------------------------------------------------------------

def _eval_dataset(source: Source, files: List[str], ds_cfg, split: str, batch_size: int,
                  num_classes: int) -> tf.data.Dataset:
  if split == 'eval':
    transform = lambda frames, el: video_ops.eval_clip(frames, ds_cfg)
    shape = (ds_cfg.num_frames, ds_cfg.crop_size, ds_cfg.crop_size, 3)
  else:
    transform = lambda frames, el: video_ops.test_views(frames, ds_cfg)
    shape = (video_ops.num_test_views(ds_cfg), ds_cfg.num_frames, ds_cfg.crop_size,
             ds_cfg.crop_size, 3)
  def describe(record, shard, index, problem):
    del shard, index
    return _reason(record, problem, source.parse, num_classes)

  ds = interleaved_records(files, min(ds_cfg.num_parallel_reads, len(files)))
  ds = decode_records(ds, source, num_classes, transform, shape, lambda el: tf.py_function(
      describe, [el['record'], el['shard'], el['index'], el['problem']], tf.string))
  ds = ds.batch(batch_size).prefetch(2)
  return ds.with_options(train_stream.deterministic_options())


def _num_eval_batches(source: Source, process_count: int, batch_size: int) -> Optional[int]:
  """The batch count every host yields (hosts must step together); None on one host."""
  if process_count == 1:
    return None
  largest = max(count_records(host_files(source.files, p, process_count, source.table))
                for p in range(process_count))
  return -(-largest // batch_size)


def _log_bad(batch: Dict[str, np.ndarray], split: str, examples: List[str]) -> None:
  for i in np.flatnonzero(batch['bad']):
    where = f"{batch['shard'][i].decode()} record {int(batch['index'][i])}"
    reason = batch['reason'][i].decode()
    logging.warning('Skipping bad %s record: %s: %s', split, where, reason)
    if len(examples) < _MAX_BAD_EXAMPLES:
      examples.append(f'{where}: {reason}')


def _eval_batches(ds, source, ds_cfg, split, batch_size, num_batches, size):
  produced, seen, num_bad, examples = 0, 0, 0, []
  budget = bad_budget(size, ds_cfg.max_bad_fraction)
  iterator = iter(ds)
  while True:
    try:
      batch = interruptible.next_of(iterator, f'{split} data')
    except StopIteration:
      break
    batch = {k: v.numpy() for k, v in batch.items()}
    bad = batch['bad']
    seen, num_bad = seen + len(bad), num_bad + int(bad.sum())
    _log_bad(batch, split, examples)
    if num_bad > budget:
      raise bad_data_error(f'the {split} split', num_bad, size, ds_cfg, source.table,
                           examples)
    padded = train_stream.pad({'inputs': batch['inputs'],
                               'label': np.where(bad, 0, batch['label'])}, batch_size)
    padded['batch_mask'][np.flatnonzero(bad)] = 0.  # a bad record counts as padding
    produced += 1
    yield _with_sources(padded, batch)
  if seen and num_bad == seen:  # every record masked: a score of nothing
    raise no_good_records_error(num_bad, size, source.files, ds_cfg, source.table, examples)
  if num_bad:
    logging.warning('%s: skipped %d bad of %d records on this host (each logged above; '
                    'within config.dataset.max_bad_fraction=%s).', split, num_bad, seen,
                    ds_cfg.max_bad_fraction)
  empty = train_stream.empty_batch(ds.element_spec['inputs'].shape[1:], np.uint8, batch_size)
  while num_batches is not None and produced < num_batches:
    produced += 1
    yield _with_sources(empty, {'shard': np.zeros(0, object), 'index': np.zeros(0, np.int64)})


def _with_sources(padded: Dict[str, np.ndarray], batch) -> Dict[str, np.ndarray]:
  """`padded` with SOURCE_KEYS: each example's shard and record index."""
  pad = len(padded['label']) - len(batch['index'])
  shards = [s.decode() if isinstance(s, bytes) else str(s) for s in batch['shard']]
  return {**padded, 'shard': np.array(shards + [''] * pad, object),
          'record': np.concatenate([np.asarray(batch['index'], np.int64),
                                    np.full(pad, -1, np.int64)])}


def make_eval_iterator(ds_cfg, split: str = 'eval', batch_size: int = 8,
                       process_index: Optional[int] = None,
                       process_count: Optional[int] = None):
  """One pass over this host's share of `split` ('eval' or 'test'), in padded batches.

  'eval' gives inputs (B, T, H, W, 3) (centre clip, centre crop); 'test' gives
  (B, V, T, H, W, 3) with V = num_test_clips * num_test_crops views per video. Padding
  examples have batch_mask 0; SOURCE_KEYS say where each example came from (host-side
  keys, not inputs of a step). With several hosts every host yields the same number of
  batches (the largest share; records are counted, not decoded, to know it).
  Bad records are logged and masked out (batch_mask 0), as padding is; BadDataError
  once they exceed `bad_budget` of this host's records (the training rule).
  """
  if split not in ('eval', 'test'):
    raise ValueError(f"split={split!r} must be 'eval' or 'test'.")
  check_config(ds_cfg)
  process_index, process_count = train_stream.resolve_process(process_index, process_count)
  source = make_source(ds_cfg, split)
  files = host_files(source.files, process_index, process_count, source.table)
  num_classes = resolve_num_classes(ds_cfg)
  ds = _eval_dataset(source, files, ds_cfg, split, batch_size, num_classes)
  num_batches = _num_eval_batches(source, process_count, batch_size)
  return _eval_batches(ds, source, ds_cfg, split, batch_size, num_batches,
                       count_records(files))
