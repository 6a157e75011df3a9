r"""Scans DMVR-format shards and reports every bad record.

  python -m data_pipelines.validate --tables=/data/kinetics/train.tfrecord@128 \
      [--num_classes=400]

A record is bad when it does not parse as a SequenceExample, has no label or a label
outside [0, num_classes), has no frames, or has a frame that does not decode or differs
in size from the first. A shard that is cut short or damaged (an interrupted copy) is
one bad record where the damage starts, with the byte offset and the number of whole
records before it. Prints one line per bad record (shard, index, reason) and a summary
per table; exits 1 (cli.DATA_ERROR) when any record is bad, 0 otherwise, 2 when a table
matches no file.

Without --num_classes the label range comes from metadata.json next to the shards, else
from the number of lines of label_map.txt there; otherwise only `label >= 0` is checked.
"""

import json
import os
import sys
from typing import Iterator, List, Optional, Tuple

from absl import app
from absl import flags

from data_pipelines import cli
from data_pipelines import dmvr_format
from data_pipelines import fs
from data_pipelines import tf_runtime


def _fully_decoded(record):
  """Parses and decodes every frame; any failure makes the record bad."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import reader
  # pylint: enable=g-import-not-at-top
  tf = tf_runtime.import_tensorflow()
  frames, label = reader.parse_dmvr(record)
  decoded = tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False),
                      frames, fn_output_signature=tf.uint8)
  return tf.shape(decoded)[0] > 0, label


def _flags(files: List[str], num_classes: int):
  """tf.data of {'shard', 'index', 'maybe_bad', 'problem'} per record; only flagged
  records are diagnosed. A damaged shard's tail comes as one record with its problem."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import reader
  # pylint: enable=g-import-not-at-top
  tf = tf_runtime.import_tensorflow()

  def check(el):
    def good(e):
      has_frames, label = _fully_decoded(e['record'])
      ok = tf.logical_and(tf.logical_and(has_frames, label >= 0), e['problem'] == '')
      if num_classes > 0:
        ok = tf.logical_and(ok, label < num_classes)
      return {'shard': e['shard'], 'index': e['index'], 'maybe_bad': tf.logical_not(ok),
              'problem': e['problem']}

    def bad(e):
      return {'shard': e['shard'], 'index': e['index'], 'maybe_bad': tf.constant(True),
              'problem': e['problem']}

    single = tf.data.Dataset.from_tensors(el)
    return single.map(good).ignore_errors().concatenate(single.map(bad)).take(1)

  records = tf.data.Dataset.from_tensor_slices(files).flat_map(reader.file_records)
  return records.interleave(check, cycle_length=tf.data.AUTOTUNE,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def scan(files: List[str], num_classes: int, progress: bool = True,
         total: Optional[int] = None) -> Iterator[Tuple[str, int, str]]:
  """Yields (shard, index, reason) for every bad record of `files`, in file order.

  `total` (the record count, for the progress bar) is counted when not given.
  """
  # pylint: disable=g-import-not-at-top
  import tqdm
  from data_pipelines import reader
  # pylint: enable=g-import-not-at-top
  total = reader.count_records(files) if total is None else total
  with tqdm.tqdm(total=total, unit='records', disable=not progress, file=sys.stderr) as bar:
    for el in _flags(files, num_classes):
      bar.update(1)
      if not el['maybe_bad']:
        continue
      shard, index = el['shard'].numpy().decode(), int(el['index'])
      reason = el['problem'].numpy().decode() or reader.record_problem(
          reader.read_record(shard, index), reader.parse_dmvr, num_classes) or (
              'fails to decode')
      yield shard, index, reason


def _num_classes_beside(files: List[str]) -> int:
  """num_classes of metadata.json beside the shards, else the lines of label_map.txt."""
  folder = os.path.dirname(files[0])
  path = os.path.join(folder, dmvr_format.METADATA_FILE)
  if fs.exists(path):
    with fs.open(path) as f:
      num_classes = int(json.load(f).get('num_classes', 0))
    if num_classes:
      return num_classes
  path = os.path.join(folder, dmvr_format.LABEL_MAP_FILE)
  return len(dmvr_format.read_label_map(path)) if fs.exists(path) else 0


def validate_tables(tables: List[str], num_classes: int = 0, progress: bool = True) -> int:
  """Prints bad records and a summary for each table; returns the number of bad records."""
  from data_pipelines import reader  # pylint: disable=g-import-not-at-top
  num_bad = 0
  for table in tables:
    files = dmvr_format.expand_table(table)
    classes = num_classes or _num_classes_beside(files)
    count = reader.count_records(files)
    bad_here, damaged = 0, []
    empty = [f for f in files if fs.size(f) == 0]  # a failed copy: one bad record each
    for shard in empty:
      print(f'BAD {shard}: the file is empty (0 bytes, no record); copy or convert it '
            'again, or remove it', flush=True)
    bad_here += len(empty)
    for shard, index, reason in scan(files, classes, progress, count):
      print(f'BAD {shard} record {index}: {reason}', flush=True)
      bad_here += 1
      if reason.startswith('the file is cut short'):
        damaged.append(os.path.basename(shard))
    bound = f'[0, {classes})' if classes > 0 else '>= 0'
    cut = (f'; {len(damaged)} shard(s) cut short or damaged: {", ".join(damaged)}'
           if damaged else '')
    if empty:
      cut += f'; {len(empty)} empty shard(s): {", ".join(map(os.path.basename, empty))}'
    print(f'{table}: {count} records in {len(files)} shard(s), {bad_here} bad '
          f'(labels checked {bound}){cut}.', flush=True)
    num_bad += bad_here
  return num_bad


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_list(
      'tables', None, 'Comma-separated tables: globs, name.tfrecord@N or name.tfrecord@*.')
  flags.DEFINE_integer(
      'num_classes', 0, 'Labels must lie in [0, num_classes); 0 -> metadata.json or no bound.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.tables:
    raise app.UsageError('--tables is required.')
  from data_pipelines import tf_runtime  # pylint: disable=g-import-not-at-top
  tf_runtime.configure()
  num_bad = validate_tables(FLAGS.tables, FLAGS.num_classes)
  return cli.DATA_ERROR if num_bad else cli.OK


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
