"""Tests for data_pipelines.validate: every bad record listed, summary, exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import dmvr_format
from data_pipelines import validate


def _jpeg(h=8, w=8):
  return tf.io.encode_jpeg(np.full((h, w, 3), 100, np.uint8)).numpy()


def _record(frames, label):
  return dmvr_format.make_sequence_example(frames, label).SerializeToString()


# index in the table -> (record, reason printed for it)
BAD = {
    1: (_record([_jpeg(), b'\xff\xd8\xffbroken'], 0), 'frame 1 of 2 does not decode'),
    4: (_record([_jpeg()], None), 'missing label (clip/label/index)'),
    6: (_record([_jpeg()], 7), 'label 7 outside [0, 5)'),
    7: (_record([], 2), 'no frames (image/encoded is empty)'),
    9: (_record([_jpeg(), _jpeg(10, 8)], 1), 'frame 1 has shape (10, 8, 3), frame 0 has'),
    10: (b'\x00 this is not a proto', 'not a parsable record'),
}


@pytest.fixture(scope='module')
def table(tmp_path_factory):
  d = tmp_path_factory.mktemp('validate')
  with dmvr_format.ShardedWriter(str(d / 'train.tfrecord'), 2) as writer:
    for i in range(12):
      writer.write(BAD[i][0] if i in BAD else _record([_jpeg(), _jpeg()], i % 5))
  return str(d / 'train.tfrecord@2')


def _location(i):
  """ShardedWriter deals records round robin: record i is record i // 2 of shard i % 2."""
  return f'train.tfrecord-{i % 2:05d}-of-00002 record {i // 2}: '


def test_scan_lists_every_bad_record_with_reason(table):
  files = dmvr_format.expand_table(table)
  found = {(os.path.basename(s), i): r for s, i, r in validate.scan(files, 5, progress=False)}
  assert len(found) == len(BAD)
  for i, (_, reason) in BAD.items():
    shard = f'train.tfrecord-{i % 2:05d}-of-00002'
    assert reason in found[(shard, i // 2)], (i, found)


def test_without_num_classes_only_negative_labels_are_out_of_range(table):
  files = dmvr_format.expand_table(table)
  reasons = [r for _, _, r in validate.scan(files, 0, progress=False)]
  assert len(reasons) == len(BAD) - 1 and not any('outside' in r for r in reasons)


def test_cli_prints_records_and_summary_and_fails(table):
  proc = subprocess.run(
      [sys.executable, '-m', 'data_pipelines.validate', f'--tables={table}',
       '--num_classes=5'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if l.startswith('BAD ')]
  assert len(lines) == len(BAD)
  for i, (_, reason) in BAD.items():
    assert any(_location(i) in l and reason in l for l in lines), (i, lines)
  assert f'{table}: 12 records in 2 shard(s), 6 bad (labels checked [0, 5)).' in proc.stdout
  assert 'records' in proc.stderr  # the tqdm progress bar


def test_clean_table_passes_with_metadata_bound(tmp_path, capsys):
  with dmvr_format.ShardedWriter(str(tmp_path / 'ok.tfrecord'), 1) as writer:
    for i in range(3):
      writer.write(_record([_jpeg()], i))
  (tmp_path / 'metadata.json').write_text(json.dumps({'num_classes': 3}))
  assert validate.validate_tables([str(tmp_path / 'ok.tfrecord@1')], progress=False) == 0
  assert '3 records in 1 shard(s), 0 bad (labels checked [0, 3)).' in capsys.readouterr().out
  (tmp_path / 'metadata.json').write_text(json.dumps({'num_classes': 2}))
  assert validate.validate_tables([str(tmp_path / 'ok.tfrecord@1')], progress=False) == 1


def test_missing_table_fails_with_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='matches no file'):
    validate.validate_tables([str(tmp_path / 'none-*.tfrecord')], progress=False)


def test_a_cut_shard_is_named_with_its_records_and_exits_1(tmp_path):
  # An interrupted copy: shard 1 loses the end of its last record.
  with dmvr_format.ShardedWriter(str(tmp_path / 'train.tfrecord'), 2) as writer:
    for i in range(8):
      writer.write(_record([_jpeg(), _jpeg()], i % 5))
  cut = tmp_path / 'train.tfrecord-00001-of-00002'
  data = cut.read_bytes()
  cut.write_bytes(data[:-50])
  proc = subprocess.run(
      [sys.executable, '-m', 'data_pipelines.validate',
       f'--tables={tmp_path}/train.tfrecord@2', '--num_classes=5'],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr
  bad = [l for l in proc.stdout.splitlines() if l.startswith('BAD ')]
  start = 3 * len(data) // 4  # shard 1 holds 4 records of equal size; the 4th is cut
  assert bad == [
      f'BAD {cut} record 3: the file is cut short or damaged at byte {start} of '
      f'{len(data) - 50}: 3 whole records were read before it, {len(data) - 50 - start} '
      'bytes after it are unreadable (an interrupted copy? copy the shard again)']
  assert (f'{tmp_path}/train.tfrecord@2: 8 records in 2 shard(s), 1 bad (labels checked '
          '[0, 5)); 1 shard(s) cut short or damaged: train.tfrecord-00001-of-00002.') in (
              proc.stdout)
  assert 'Traceback' not in proc.stderr
