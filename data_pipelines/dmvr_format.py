"""DMVR's TFRecord layout, shared by the reader, the converter and the synthetic dataset.

One `tf.train.SequenceExample` per video: JPEG bytes per frame in the feature list
`image/encoded`, the integer label in the context feature `clip/label/index` and,
optionally, the class name in `clip/label/text`. Tables are named as a glob or, as in
scenic/DMVR, `name.tfrecord@N` for N shards `name.tfrecord-0000i-of-0000N`.
"""

import glob
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from data_pipelines import cli
from data_pipelines import fs
from data_pipelines import tf_runtime

# What to do about a table with no files (said by the reader and by the run's start-up check).
MAKE_DATA_HINT = ('Convert videos with `python -m data_pipelines.convert_videos`, generate the '
                  'synthetic dataset with `python -m data_pipelines.synthetic`, or point '
                  'config.dataset.base_dir at the folder that holds the shards.')


def _tf():
  # Imported on use: the converter and the dataset tools import this module, and their
  # --help must not wait for TensorFlow.
  tf = tf_runtime.import_tensorflow()
  return tf

FRAMES_KEY = 'image/encoded'
LABEL_KEY = 'clip/label/index'
LABEL_TEXT_KEY = 'clip/label/text'
VIDEO_ID_KEY = 'video/id'


def sharded_names(prefix: str, num_shards: int) -> List[str]:
  """`prefix@N` -> the N shard file names scenic/DMVR use."""
  return [f'{prefix}-{i:05d}-of-{num_shards:05d}' for i in range(num_shards)]


def expand_table(table: str, base_dir: str = '') -> List[str]:
  """Resolves a table name (glob, `name@N` or `name@*`) to an existing, sorted file list.

  Raises FileNotFoundError naming the pattern when nothing matches or a shard is missing.
  """
  path = os.path.join(base_dir, table) if base_dir else table
  if '@' in os.path.basename(path):
    prefix, count = path.rsplit('@', 1)
    if count == '*':
      files = fs.glob(f'{glob.escape(prefix)}-?????-of-?????')
    else:
      files = sharded_names(prefix, int(count))
      missing = [f for f in files if not fs.exists(f)]
      if missing:
        raise FileNotFoundError(
            f'Table {path!r}: {len(missing)} of {len(files)} shards are missing, e.g. '
            f'{missing[0]!r}. Convert videos with `python -m data_pipelines.convert_videos` '
            'or point config.dataset.base_dir at the folder that holds the shards.')
  else:
    files = fs.glob(path)
  if not files:
    raise FileNotFoundError(f'Table {path!r} matches no file. {MAKE_DATA_HINT}')
  return files


def encode_jpeg_frames(frames: np.ndarray, quality: int = 90,
                       chroma_downsampling: bool = True) -> List[bytes]:
  """(T, H, W, 3) uint8 -> list of JPEG bytes, one per frame.

  chroma_downsampling=True (JPEG's usual 4:2:0, as DMVR's converters write) halves the
  colour resolution; False keeps it full, for small frames where colour detail matters.
  """
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'Expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} '
                     f'{frames.shape}.')
  tf = _tf()
  return [tf.io.encode_jpeg(f, quality=quality, chroma_downsampling=chroma_downsampling)
          .numpy() for f in frames]


def make_sequence_example(jpeg_frames: Sequence[bytes], label: Optional[int],
                          label_text: Optional[str] = None,
                          video_id: Optional[str] = None):
  """Builds one DMVR-format tf.train.SequenceExample."""
  ex = _tf().train.SequenceExample()
  if label is not None:
    ex.context.feature[LABEL_KEY].int64_list.value.append(int(label))
  if label_text is not None:
    ex.context.feature[LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode())
  if video_id is not None:
    ex.context.feature[VIDEO_ID_KEY].bytes_list.value.append(video_id.encode())
  frames = ex.feature_lists.feature_list[FRAMES_KEY]
  for jpeg in jpeg_frames:
    frames.feature.add().bytes_list.value.append(jpeg)
  return ex


class ShardedWriter:
  """Writes serialized records round-robin into `prefix@N` shards, atomically.

  Records go to temporary files that are renamed into place only when the writer
  closes without an exception, so a crashed conversion never leaves a shard that
  looks complete.
  """

  def __init__(self, prefix: str, num_shards: int):
    if num_shards < 1:
      raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
    fs.makedirs(os.path.dirname(fs.abspath(prefix)))
    self.paths = sharded_names(prefix, num_shards)
    self._tmp = [p + '.tmp' for p in self.paths]
    self._writers = [_tf().io.TFRecordWriter(p) for p in self._tmp]
    self.num_written = 0

  def write(self, record: bytes) -> None:
    self._writers[self.num_written % len(self._writers)].write(record)
    self.num_written += 1

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    try:
      for w in self._writers:
        w.close()  # flushes: a full disk can first show here
      if exc_type is None:
        for tmp, final in zip(self._tmp, self.paths):
          fs.rename(tmp, final)
        return False
    except BaseException:
      self._discard()
      raise
    self._discard()
    return False

  def _discard(self) -> None:
    for tmp in self._tmp:
      if fs.exists(tmp):
        fs.remove(tmp)


# ------------------------------------------------- the dataset folder: metadata, labels
METADATA_FILE = 'metadata.json'


# A TFRecord: length (8 bytes), its CRC (4), the data, the data's CRC (4).
_TFRECORD_HEAD, _TFRECORD_CRCS = 8, 8


def count_tfrecords(path: str) -> int:
  """Records in a TFRecord file, from the length fields alone (a seek per record, the
  data never read): fast enough to count a whole table at every start. A cut or damaged
  tail counts as one record, as the readers count it (a bad one)."""
  opener = open if not fs.is_url(path) else lambda p, m: fs.open(p, m)
  count, position, size = 0, 0, fs.size(path)
  with opener(path, 'rb') as f:
    while position < size:
      f.seek(position)
      head = f.read(_TFRECORD_HEAD)
      count += 1
      if len(head) < _TFRECORD_HEAD:
        break
      position += _TFRECORD_HEAD + _TFRECORD_CRCS + int.from_bytes(head, 'little')
  return count


LABEL_MAP_FILE = 'label_map.txt'


def read_label_map(path: str) -> List[str]:
  """One class name per line; line i is label i. Blank lines are not allowed."""
  if not fs.exists(path):
    raise FileNotFoundError(f'Label map {path!r} does not exist.')
  with fs.open(path) as f:
    names = [line.strip() for line in f.read().splitlines()]
  while names and not names[-1]:
    names.pop()
  seen = {}
  for i, name in enumerate(names):
    if not name:
      raise cli.ConfigError(f'Label map {path!r}: line {i + 1} is blank; write one class name '
                       'per line.')
    if name in seen:
      raise cli.ConfigError(f'Label map {path!r}: class {name!r} appears on lines '
                       f'{seen[name] + 1} and {i + 1}.')
    seen[name] = i
  if not names:
    raise cli.ConfigError(f'Label map {path!r} is empty.')
  return names


def write_metadata(output_dir: str, metadata: Dict) -> None:
  """Writes `metadata.json` and `label_map.txt` (from metadata['label_names']) atomically."""
  fs.makedirs(output_dir)
  fs.atomic_write(os.path.join(output_dir, METADATA_FILE),
               json.dumps(metadata, indent=2, sort_keys=True) + '\n')
  fs.atomic_write(os.path.join(output_dir, LABEL_MAP_FILE),
               ''.join(f'{name}\n' for name in metadata['label_names']))


def merge_split_metadata(output_dir: str, split: str, num_examples: int,
                         label_names: Sequence[str], table: str, **extra) -> Dict:
  """Adds one split to `output_dir/metadata.json`, keeping the splits already there."""
  path = os.path.join(output_dir, METADATA_FILE)
  metadata = {}
  if fs.exists(path):
    with fs.open(path) as f:
      metadata = json.load(f)
  metadata.setdefault('splits', {})[split] = int(num_examples)
  metadata.setdefault('tables', {})[split] = table
  metadata.update(extra)
  metadata['label_names'] = list(label_names)
  metadata['num_classes'] = len(label_names)
  write_metadata(output_dir, metadata)
  return metadata
