"""Tests for data_pipelines.dmvr_format: names, table expansion, records, the writer."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import dmvr_format


def test_sharded_names_follow_scenic():
  assert dmvr_format.sharded_names('/d/train.tfrecord', 3) == [
      '/d/train.tfrecord-00000-of-00003', '/d/train.tfrecord-00001-of-00003',
      '/d/train.tfrecord-00002-of-00003']


def _touch(paths):
  for p in paths:
    open(p, 'wb').close()


def test_expand_table_at_n_at_star_and_glob(tmp_path):
  shards = dmvr_format.sharded_names(str(tmp_path / 'train.tfrecord'), 3)
  _touch(shards + [str(tmp_path / 'other.tfrecord-00000-of-00001')])
  assert dmvr_format.expand_table('train.tfrecord@3', str(tmp_path)) == shards
  assert dmvr_format.expand_table(str(tmp_path / 'train.tfrecord@*')) == shards
  assert dmvr_format.expand_table('train.tfrecord-*', str(tmp_path)) == shards


def test_expand_table_errors_name_the_pattern(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=re.escape(f"Table '{tmp_path}/x.tfrecord@*' matches no file")):
    dmvr_format.expand_table('x.tfrecord@*', str(tmp_path))
  with pytest.raises(FileNotFoundError, match=re.escape(f"'{tmp_path}/y-*' matches no")):
    dmvr_format.expand_table(str(tmp_path / 'y-*'))
  shards = dmvr_format.sharded_names(str(tmp_path / 'z.tfrecord'), 2)
  _touch(shards[:1])
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"1 of 2 shards are missing, e.g. '{shards[1]}'")):
    dmvr_format.expand_table('z.tfrecord@2', str(tmp_path))


def test_sequence_example_layout_and_jpeg_round_trip():
  frames = np.zeros((2, 8, 8, 3), np.uint8)
  frames[1] = 200
  ex = dmvr_format.make_sequence_example(dmvr_format.encode_jpeg_frames(frames), 4,
                                         label_text='run', video_id='v1')
  ex = tf.train.SequenceExample.FromString(ex.SerializeToString())
  assert ex.context.feature['clip/label/index'].int64_list.value == [4]
  assert ex.context.feature['clip/label/text'].bytes_list.value == [b'run']
  assert ex.context.feature['video/id'].bytes_list.value == [b'v1']
  encoded = [f.bytes_list.value[0] for f in ex.feature_lists.feature_list['image/encoded'].feature]
  decoded = np.stack([tf.io.decode_jpeg(e).numpy() for e in encoded])
  assert np.abs(decoded.astype(int) - frames).max() <= 2
  unlabelled = dmvr_format.make_sequence_example([], None)
  assert 'clip/label/index' not in unlabelled.context.feature


def test_encode_jpeg_frames_full_chroma_keeps_small_colour_detail():
  # A 2x2-pixel red square on green: 4:2:0 subsampling averages its colour with the
  # background, full chroma keeps it.
  frame = np.zeros((1, 16, 16, 3), np.uint8)
  frame[..., 1] = 200
  frame[0, 6:8, 6:8] = (220, 20, 20)
  errors = {}
  for chroma in (True, False):
    jpeg = dmvr_format.encode_jpeg_frames(frame, quality=95, chroma_downsampling=chroma)[0]
    decoded = tf.io.decode_jpeg(jpeg).numpy().astype(np.int32)
    errors[chroma] = np.abs(decoded[6:8, 6:8] - frame[0, 6:8, 6:8]).mean()
  assert errors[False] < 10 < errors[True]


def test_encode_jpeg_frames_rejects_wrong_layout():
  with pytest.raises(ValueError, match=r'uint8 frames of shape \(T, H, W, 3\), got float32'):
    dmvr_format.encode_jpeg_frames(np.zeros((2, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r'got uint8 \(4, 4, 3\)'):
    dmvr_format.encode_jpeg_frames(np.zeros((4, 4, 3), np.uint8))


def test_sharded_writer_round_robin(tmp_path):
  with dmvr_format.ShardedWriter(str(tmp_path / 'd' / 't.tfrecord'), 2) as writer:
    for i in range(5):
      writer.write(f'r{i}'.encode())
  assert writer.num_written == 5
  read = [[r.numpy() for r in tf.data.TFRecordDataset(p)] for p in writer.paths]
  assert read == [[b'r0', b'r2', b'r4'], [b'r1', b'r3']]
  assert sorted(os.listdir(tmp_path / 'd')) == ['t.tfrecord-00000-of-00002',
                                                't.tfrecord-00001-of-00002']


def test_sharded_writer_leaves_nothing_on_error(tmp_path):
  with pytest.raises(RuntimeError, match='boom'):
    with dmvr_format.ShardedWriter(str(tmp_path / 't.tfrecord'), 2) as writer:
      writer.write(b'x')
      raise RuntimeError('boom')
  assert not os.listdir(tmp_path)
  with pytest.raises(ValueError, match='num_shards must be >= 1, got 0'):
    dmvr_format.ShardedWriter(str(tmp_path / 't.tfrecord'), 0)
