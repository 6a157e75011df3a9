"""Tests for data_pipelines.reader: round trips, multi-host splits, bad records, resume."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import BadDataError
from data_pipelines import dataset_info
from data_pipelines import dmvr_format
from data_pipelines import make_eval_iterator
from data_pipelines import make_train_iterator
from data_pipelines import reader
from data_pipelines import train_stream
from vivit_adapter import configs

H, W = 12, 16  # frame size of the tiny videos
NUM_CLASSES = 64  # labels are video ids, so each example can be recognised


def _video(vid: int, num_frames: int) -> np.ndarray:
  """Smooth frames (JPEG keeps them close) that differ per video and per frame."""
  y, x = np.mgrid[0:H, 0:W]
  t = np.arange(num_frames)[:, None, None]
  frames = np.stack([(4 * x + 7 * vid + 0 * t) % 256, (5 * y + 3 * t + 0 * x) % 256,
                     np.broadcast_to((9 * vid + 20 * t) % 256, (num_frames, H, W))], -1)
  return frames.astype(np.uint8)


def _good(vid: int, num_frames: int = 6) -> bytes:
  frames = dmvr_format.encode_jpeg_frames(_video(vid, num_frames))
  return dmvr_format.make_sequence_example(frames, vid).SerializeToString()


BAD_RECORDS = {
    'undecodable': lambda vid: dmvr_format.make_sequence_example(
        [b'not a jpeg'] * 4, vid).SerializeToString(),
    'no_label': lambda vid: dmvr_format.make_sequence_example(
        dmvr_format.encode_jpeg_frames(_video(vid, 4)), None).SerializeToString(),
    'label_range': lambda vid: dmvr_format.make_sequence_example(
        dmvr_format.encode_jpeg_frames(_video(vid, 4)), NUM_CLASSES + 3).SerializeToString(),
    'no_frames': lambda vid: dmvr_format.make_sequence_example([], vid).SerializeToString(),
}
REASONS = {'undecodable': 'does not decode', 'no_label': 'missing label',
           'label_range': f'label {NUM_CLASSES + 3} outside [0, {NUM_CLASSES})',
           'no_frames': 'no frames'}


def _write(prefix: str, records, num_shards: int) -> None:
  with dmvr_format.ShardedWriter(prefix, num_shards) as writer:
    for r in records:
      writer.write(r)


def _cfg(base_dir, **overrides):
  ds = configs.base_config().dataset
  ds.update(dict(base_dir=str(base_dir), num_classes=NUM_CLASSES, num_frames=4, stride=1,
                 min_resize=H, crop_size=H, shuffle_buffer=5, num_parallel_reads=2,
                 num_test_clips=2, num_test_crops=3, train_table='train.tfrecord@*',
                 eval_table='eval.tfrecord@*', test_table='eval.tfrecord@*'), **overrides)
  return ds


@pytest.fixture(scope='module')
def clean_dir(tmp_path_factory):
  """23 training videos of varied lengths in 4 shards; 10 eval videos in 4 shards."""
  d = tmp_path_factory.mktemp('clean')
  _write(str(d / 'train.tfrecord'), [_good(v, 3 + v % 5) for v in range(23)], 4)
  _write(str(d / 'eval.tfrecord'), [_good(v, 6) for v in range(10)], 4)
  return d


@pytest.fixture(scope='module')
def bad_dir(tmp_path_factory):
  """24 training records of which one of each bad kind; eval with one undecodable."""
  d = tmp_path_factory.mktemp('bad')
  kinds = {3: 'undecodable', 9: 'no_label', 14: 'label_range', 20: 'no_frames'}
  _write(str(d / 'train.tfrecord'),
         [BAD_RECORDS[kinds[v]](v) if v in kinds else _good(v) for v in range(24)], 2)
  _write(str(d / 'eval.tfrecord'),
         [BAD_RECORDS['undecodable'](v) if v == 5 else _good(v) for v in range(8)], 1)
  return d


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


# ----------------------------------------------------------------------------------------
# Round trip, shapes, padding, views.
# ----------------------------------------------------------------------------------------

def test_round_trip_frames_and_labels(clean_dir):
  # crop = min_resize = frame height and stride 1: the eval clip is the middle 4 frames,
  # centre-cropped horizontally, with no resampling.
  cfg = _cfg(clean_dir)
  batches = list(make_eval_iterator(cfg, 'eval', batch_size=4, process_index=0,
                                    process_count=1))
  labels = np.concatenate([b['label'][b['batch_mask'] > 0] for b in batches])
  assert sorted(labels) == list(range(10))
  for b in batches:
    for inputs, label, mask in zip(b['inputs'], b['label'], b['batch_mask']):
      if not mask:
        continue
      original = _video(int(label), 6)[1:5, :, 2:14].astype(np.float32)
      decoded = inputs.astype(np.float32)  # uint8 pixels, normalised on the device
      assert np.abs(decoded - original).mean() < 3 and np.abs(decoded - original).max() < 40


def test_eval_batch_mask_pads_the_last_batch(clean_dir):
  batches = list(make_eval_iterator(_cfg(clean_dir), 'eval', batch_size=4,
                                    process_index=0, process_count=1))
  assert [b['batch_mask'].tolist() for b in batches] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
  last = batches[-1]
  assert last['inputs'].shape == (4, 4, H, H, 3) and last['inputs'].dtype == np.uint8
  assert last['label'].dtype == np.int32 and not last['inputs'][2:].any()


def test_test_split_groups_views_per_video(clean_dir):
  cfg = _cfg(clean_dir)
  batches = list(make_eval_iterator(cfg, 'test', batch_size=3, process_index=0,
                                    process_count=1))
  assert batches[0]['inputs'].shape == (3, 6, 4, H, H, 3)
  assert sum(b['batch_mask'].sum() for b in batches) == 10
  b = batches[0]
  vid = int(b['label'][0])
  pixels = b['inputs'][0].astype(np.float32)  # (V, T, H, W, 3) uint8
  video = _video(vid, 6).astype(np.float32)  # 6 frames: clips start at 0 and 2
  for v in range(6):
    clip, crop = divmod(v, 3)
    left = [0, 2, 4][crop]
    original = video[2 * clip:2 * clip + 4, :, left:left + H]
    assert np.abs(pixels[v] - original).mean() < 3, (v, clip, crop)


# ----------------------------------------------------------------------------------------
# Multi-host.
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('process_count', [1, 2, 3, 4])
def test_host_files_disjoint_and_complete(process_count):
  files = [f'f{i}' for i in range(7)]
  shares = [reader.host_files(files, p, process_count) for p in range(process_count)]
  assert sorted(sum(shares, [])) == sorted(files)
  assert all(shares)


def test_fewer_files_than_hosts_is_an_error():
  with pytest.raises(ValueError, match="Table 'x@2' has 2 file.*3 hosts"):
    reader.host_files(['a', 'b'], 0, 3, 'x@2')


def test_eval_every_example_exactly_once_across_hosts(clean_dir):
  cfg = _cfg(clean_dir)
  for process_count in (2, 4):
    labels, lengths = [], []
    for p in range(process_count):
      batches = list(make_eval_iterator(cfg, 'eval', 2, p, process_count))
      lengths.append(len(batches))
      labels += [l for b in batches for l, m in zip(b['label'], b['batch_mask']) if m]
    assert sorted(labels) == list(range(10))
    assert len(set(lengths)) == 1  # hosts step together


def test_train_hosts_read_disjoint_records(clean_dir):
  cfg = _cfg(clean_dir)
  seen = []
  for p in range(2):
    it = make_train_iterator(cfg, batch_size=11, seed=0, process_index=p, process_count=2)
    seen.append(set(next(it)['label']))
  # Host 0 reads shards 0 and 2 (videos 0 mod 4 and 2 mod 4), host 1 the odd ones.
  assert all(l % 2 == 0 for l in seen[0]) and all(l % 2 == 1 for l in seen[1])


# ----------------------------------------------------------------------------------------
# Training stream: epochs, determinism, resume.
# ----------------------------------------------------------------------------------------

def test_train_batches_and_epoch_coverage(clean_dir):
  it = make_train_iterator(_cfg(clean_dir), batch_size=4, seed=1, process_index=0,
                           process_count=1)
  batches = _take(it, 7)  # 28 examples: a whole epoch of 23 and 5 of the next
  first = batches[0]
  assert first['inputs'].shape == (4, 4, H, H, 3) and first['inputs'].dtype == np.uint8
  assert first['label'].dtype == np.int32 and first['batch_mask'].tolist() == [1.0] * 4
  labels = np.concatenate([b['label'] for b in batches])
  assert sorted(labels[:23]) == list(range(23))
  assert not np.array_equal(labels[:5], labels[23:])  # a new order each epoch
  assert it.state['epoch'] == 1 and it.num_seen == 28 and it.num_bad == 0


def test_close_stops_the_pipeline_now_and_exit_closes_what_is_open(clean_dir, monkeypatch):
  import weakref  # pylint: disable=g-import-not-at-top
  # Only this test's iterators: other tests' stay open.
  monkeypatch.setattr(train_stream, '_OPEN_ITERATORS', weakref.WeakSet())
  it = make_train_iterator(_cfg(clean_dir), batch_size=4, seed=1, process_index=0,
                           process_count=1)
  other = make_train_iterator(_cfg(clean_dir), batch_size=4, seed=2, process_index=0,
                              process_count=1)
  next(it)
  pipeline = weakref.ref(it._iterator)  # pylint: disable=protected-access
  assert it in train_stream._OPEN_ITERATORS and other in train_stream._OPEN_ITERATORS  # pylint: disable=protected-access
  state = it.state
  it.close()
  # The tf.data iterator (and its threads) is gone now, not at the interpreter's exit:
  # the iterator refers to itself through the bad-record logger, so only the cycle
  # collector would free it otherwise.
  assert pipeline() is None and it not in train_stream._OPEN_ITERATORS  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='This TrainIterator is closed; make a new one'):
    next(it)
  assert it.state == state  # still there to resume from
  train_stream.close_open_iterators()  # what atexit runs
  assert other not in train_stream._OPEN_ITERATORS and other._iterator is None  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='closed'):
    next(other)


def test_same_seed_same_stream_other_seed_other_stream(clean_dir):
  cfg = _cfg(clean_dir, color_jitter=0.4)
  a = _take(make_train_iterator(cfg, 4, seed=5, process_index=0, process_count=1), 2)
  b = _take(make_train_iterator(cfg, 4, seed=5, process_index=0, process_count=1), 2)
  c = _take(make_train_iterator(cfg, 4, seed=6, process_index=0, process_count=1), 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['inputs'], y['inputs'])
  assert not np.array_equal(a[0]['inputs'], c[0]['inputs'])


def _check_resume(cfg, k, n, batch_size=4):
  it = make_train_iterator(cfg, batch_size, seed=2, process_index=0, process_count=1)
  _take(it, k)
  state = json.loads(json.dumps(it.state))
  expected = _take(it, n)
  resumed = make_train_iterator(cfg, batch_size, seed=2, state=state, process_index=0,
                                process_count=1)
  got = _take(resumed, n)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(e['inputs'], g['inputs'])
    np.testing.assert_array_equal(e['label'], g['label'])
  assert resumed.state == it.state
  return it


def test_resume_is_exact_within_and_across_epochs(clean_dir):
  cfg = _cfg(clean_dir)
  _check_resume(cfg, k=2, n=2)
  _check_resume(cfg, k=5, n=3)  # the resumed batches straddle the epoch boundary


def test_resume_is_exact_with_bad_records_in_the_stream(bad_dir):
  it = _check_resume(_cfg(bad_dir, max_bad_fraction=0.5), k=3, n=4)
  # 28 examples handed out: a whole epoch (20 good, 4 bad) and 8 more.
  assert it.num_seen - it.num_bad == 28 and it.num_bad >= 4


def test_resume_state_must_match_the_run(clean_dir):
  cfg = _cfg(clean_dir)
  state = make_train_iterator(cfg, 2, seed=1, process_index=0, process_count=1).state
  with pytest.raises(ValueError, match='seed=1 but this run has seed=2'):
    make_train_iterator(cfg, 2, seed=2, state=state, process_index=0, process_count=1)
  with pytest.raises(ValueError, match='process_count=1 but this run has process_count=2'):
    make_train_iterator(cfg, 2, seed=1, state=state, process_index=0, process_count=2)


# ----------------------------------------------------------------------------------------
# Bad records.
# ----------------------------------------------------------------------------------------

def test_train_skips_and_counts_every_bad_kind(bad_dir):
  it = make_train_iterator(_cfg(bad_dir, max_bad_fraction=0.5), batch_size=10, seed=0,
                           process_index=0, process_count=1)
  batches = _take(it, 3)  # 30 examples > 20 good: the whole first epoch was read
  labels = np.concatenate([b['label'] for b in batches])
  assert sorted(labels[:20]) == [v for v in range(24) if v not in (3, 9, 14, 20)]
  assert it.num_seen - it.num_bad == 30 and it.num_bad >= 4
  text = '\n'.join(it.bad_examples)
  for reason in REASONS.values():
    assert reason in text, (reason, text)
  assert 'train.tfrecord-0000' in text


def test_too_many_bad_records_stop_with_a_listing(tmp_path):
  records = [BAD_RECORDS['undecodable'](v) if v % 3 == 0 else _good(v) for v in range(30)]
  _write(str(tmp_path / 'train.tfrecord'), records, 2)
  it = make_train_iterator(_cfg(tmp_path, max_bad_fraction=0.1), batch_size=4, seed=0,
                           process_index=0, process_count=1)
  with pytest.raises(BadDataError, match=r'bad records already in epoch 0 of training on '
                     r'this host, more than config.dataset.max_bad_fraction=0.1 of its 30 '
                     r'records allow.*train\.tfrecord-0000\d-of-00002 record \d+: '
                     r'frame 0 of 4 does not decode'):
    _take(it, 10)


def test_all_bad_records_stop_instead_of_spinning(tmp_path):
  _write(str(tmp_path / 'train.tfrecord'),
         [BAD_RECORDS['no_frames'](v) for v in range(5)], 1)
  it = make_train_iterator(_cfg(tmp_path), batch_size=2, seed=0, process_index=0,
                           process_count=1)
  with pytest.raises(BadDataError, match='no frames'):
    next(it)


@pytest.mark.parametrize('split', ['eval', 'test'])
def test_bad_eval_record_is_skipped_masked_and_logged(bad_dir, split, caplog):
  batches = list(make_eval_iterator(_cfg(bad_dir), split, 4, process_index=0,
                                    process_count=1))
  mask = np.concatenate([b['batch_mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 7 and sorted(labels[mask > 0]) == [0, 1, 2, 3, 4, 6, 7]
  assert 'eval.tfrecord-00000-of-00001 record 5: frame 0 of 4 does not decode' in caplog.text
  # 0 is strict: the first bad record stops evaluation, in one line naming it.
  with pytest.raises(BadDataError, match=rf'^1 bad records already in the {split} split on '
                     r'this host, more than config.dataset.max_bad_fraction=0.0 of its 8 '
                     r'records allow .*First: .*eval\.tfrecord-00000-of-00001 record 5: frame 0 '
                     r'of 4 does not decode.*--tables=/.*/eval\.tfrecord@\*'):
    list(make_eval_iterator(_cfg(bad_dir, max_bad_fraction=0.0), split, 4,
                            process_index=0, process_count=1))


def test_one_bad_clip_in_a_small_dataset_trains_a_broken_one_stops(tmp_path):
  # 24 clips, one undecodable: 4% of every epoch, under the default 5%.
  _write(str(tmp_path / 'small' / 'train.tfrecord'),
         [BAD_RECORDS['undecodable'](v) if v == 0 else _good(v) for v in range(24)], 2)
  it = make_train_iterator(_cfg(tmp_path / 'small'), batch_size=4, seed=0,
                           process_index=0, process_count=1)
  _take(it, 30)  # 120 good clips: five epochs and the start of a sixth
  assert it.num_bad == it.num_seen - 120 and it.num_bad >= 5
  assert it.bad_examples == [  # listed once, however many epochs
      f'{tmp_path}/small/train.tfrecord-00000-of-00002 record 0: frame 0 of 4 does not '
      'decode (Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP '
      'required.)']
  # One clip in three bad: stopped in one line with the command that lists them all.
  _write(str(tmp_path / 'broken' / 'train.tfrecord'),
         [BAD_RECORDS['no_frames'](v) if v % 3 == 0 else _good(v) for v in range(24)], 2)
  it = make_train_iterator(_cfg(tmp_path / 'broken'), batch_size=4, seed=0,
                           process_index=0, process_count=1)
  with pytest.raises(BadDataError) as e:
    _take(it, 10)
  message = str(e.value)
  assert '\n' not in message
  assert re.match(r'2 bad records already in epoch 0 of training on this host, more than '
                  r'config\.dataset\.max_bad_fraction=0\.05 of its 24 records allow \(each is '
                  r'logged above\)\. First: .*record \d+: no frames', message), message
  assert f'python -m data_pipelines.validate --tables={tmp_path}/broken/train.tfrecord@*' in (
      message)


def _truncate(path, nbytes):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:-nbytes])
  return len(data) - nbytes


@pytest.fixture(scope='module')
def cut_dir(tmp_path_factory):
  """24 training and 8 eval videos in 2 shards each; shard 1 of each cut mid-record."""
  d = tmp_path_factory.mktemp('cut')
  _write(str(d / 'train.tfrecord'), [_good(v) for v in range(24)], 2)
  _write(str(d / 'eval.tfrecord'), [_good(v) for v in range(8)], 2)
  for table in ('train', 'eval'):
    _truncate(str(d / f'{table}.tfrecord-00001-of-00002'), 100)
  return d


def test_cut_shard_is_one_bad_record_with_offset_in_training(cut_dir, caplog):
  # Shard 1 of train keeps 11 whole records of 12; its tail is one bad record.
  assert reader.count_records(dmvr_format.expand_table('train.tfrecord@*', str(cut_dir))) == 24
  it = make_train_iterator(_cfg(cut_dir), batch_size=4, seed=0, process_index=0,
                           process_count=1)
  labels = np.concatenate([b['label'] for b in _take(it, 12)])  # two epochs of 23
  assert sorted(labels[:23]) == [v for v in range(24) if v != 23]
  assert it.num_bad == 2
  assert re.fullmatch(
      rf'{cut_dir}/train\.tfrecord-00001-of-00002 record 11: the file is cut short or '
      r'damaged at byte \d+ of \d+: 11 whole records were read before it, \d+ bytes after '
      r'it are unreadable \(an interrupted copy\? copy the shard again\)',
      it.bad_examples[0]), it.bad_examples
  assert caplog.text.count('Skipping bad training record') == 1


def test_cut_shard_in_eval_is_skipped_and_strict_eval_names_it(cut_dir):
  batches = list(make_eval_iterator(_cfg(cut_dir), 'eval', 4, process_index=0,
                                    process_count=1))
  assert sum(b['batch_mask'].sum() for b in batches) == 7
  with pytest.raises(BadDataError, match=r'eval\.tfrecord-00001-of-00002 record 3: the file '
                     'is cut short or damaged at byte'):
    list(make_eval_iterator(_cfg(cut_dir, max_bad_fraction=0.0), 'eval', 4,
                            process_index=0, process_count=1))


def test_corrupt_sampled_frame_is_counted(tmp_path):
  frames = dmvr_format.encode_jpeg_frames(_video(1, 4))
  frames[2] = frames[2][:40]  # a cut JPEG among good ones; every frame is in the clip
  records = [_good(v) for v in range(23)] + [
      dmvr_format.make_sequence_example(frames, 1).SerializeToString()]
  _write(str(tmp_path / 'train.tfrecord'), records, 1)
  it = make_train_iterator(_cfg(tmp_path), batch_size=23, seed=0, process_index=0,
                           process_count=1)
  next(it)
  assert it.num_bad == 1 and 'record 23: frame 2 of 4 does not decode' in it.bad_examples[0]


def test_record_problem_names_each_kind():
  for kind, make in BAD_RECORDS.items():
    assert REASONS[kind] in reader.record_problem(make(1), reader.parse_dmvr, NUM_CLASSES)
  assert reader.record_problem(_good(1), reader.parse_dmvr, NUM_CLASSES) == ''
  assert 'not a parsable record' in reader.record_problem(b'\x01junk', reader.parse_dmvr, 4)
  mixed = dmvr_format.make_sequence_example(
      [tf.io.encode_jpeg(np.zeros((s, 4, 3), np.uint8)).numpy() for s in (4, 6)], 0)
  assert 'frame 1 has shape (6, 4, 3), frame 0 has (4, 4, 3)' in reader.record_problem(
      mixed.SerializeToString(), reader.parse_dmvr, 4)


# ----------------------------------------------------------------------------------------
# Start-up errors and dataset info.
# ----------------------------------------------------------------------------------------

def test_missing_path_and_empty_glob_fail_at_start(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError,
                     match=re.escape(f"'{missing}/train.tfrecord@*' matches no file")):
    make_train_iterator(_cfg(missing), 2, 0, process_index=0, process_count=1)
  cfg = _cfg(tmp_path, eval_table='val-*.tfrecord')
  with pytest.raises(FileNotFoundError,
                     match=re.escape(f"'{tmp_path}/val-*.tfrecord' matches no")):
    make_eval_iterator(cfg, 'eval', 2, process_index=0, process_count=1)
  _write(str(tmp_path / 'part.tfrecord'), [_good(0)], 2)
  os.remove(tmp_path / 'part.tfrecord-00001-of-00002')
  with pytest.raises(FileNotFoundError, match='1 of 2 shards are missing'):
    make_train_iterator(_cfg(tmp_path, train_table='part.tfrecord@2'), 2, 0,
                        process_index=0, process_count=1)


def test_invalid_config_is_rejected_with_the_key(clean_dir):
  with pytest.raises(ValueError, match="name='zip' must be one of"):
    make_train_iterator(_cfg(clean_dir, name='zip'), 2, 0, process_index=0,
                        process_count=1)
  with pytest.raises(ValueError, match='min_resize=8 must be >= crop_size=12'):
    dataset_info(_cfg(clean_dir, min_resize=8))


def test_dataset_info_counts_records_without_metadata(clean_dir):
  info = dataset_info(_cfg(clean_dir))
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples,
          info.num_test_examples, info.label_names) == (NUM_CLASSES, 23, 10, 10, None)
  with pytest.raises(ValueError, match='config.dataset.num_classes is 0, and neither'):
    dataset_info(_cfg(clean_dir, num_classes=0))


def test_num_classes_from_the_label_map_without_metadata(tmp_path):
  _write(str(tmp_path / 'train.tfrecord'), [_good(0), _good(1)], 1)
  (tmp_path / 'label_map.txt').write_text('a\nb\nc\n')
  info = dataset_info(_cfg(tmp_path, num_classes=0))
  assert (info.num_classes, info.label_names) == (3, ['a', 'b', 'c'])
  with pytest.raises(ValueError, match=r"label_map.txt' names 3 classes but the dataset has 4"):
    dataset_info(_cfg(tmp_path, num_classes=4))  # a contradiction stays an error


def test_dataset_info_reads_metadata_and_label_map(tmp_path):
  _write(str(tmp_path / 'train.tfrecord'), [_good(0), _good(1)], 1)
  meta = {'num_classes': 3, 'splits': {'train': 2, 'validation': 7, 'test': 5},
          'label_names': ['x', 'y', 'z']}
  (tmp_path / 'metadata.json').write_text(json.dumps(meta))
  info = dataset_info(_cfg(tmp_path, num_classes=0))
  assert info == reader.DatasetInfo(3, 2, 7, 5, ['x', 'y', 'z'])
  (tmp_path / 'label_map.txt').write_text('a\nb\nc\n')
  assert dataset_info(_cfg(tmp_path, num_classes=0)).label_names == ['a', 'b', 'c']
  (tmp_path / 'names.txt').write_text('a\nb\n')
  with pytest.raises(ValueError, match='names 2 classes but the dataset has 3'):
    dataset_info(_cfg(tmp_path, num_classes=0, label_map=str(tmp_path / 'names.txt')))


# ----------------------------------------------------------------------------------------
# tfds.
# ----------------------------------------------------------------------------------------

def _tfds_builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class ReaderTestVideos(tfds.core.GeneratorBasedBuilder):
    """The synthetic dataset's feature layout: Video of uint8 frames + ClassLabel."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'video': tfds.features.Video(shape=(None, H, W, 3)),
          'label': tfds.features.ClassLabel(names=['zero', 'one', 'two', 'three', 'four',
                                                   'five', 'six', 'seven'])}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(range(6)),
              'validation': self._generate_examples(range(6, 8))}

    def _generate_examples(self, ids):
      for vid in ids:
        yield vid, {'video': _video(vid, 5), 'label': vid}

  return ReaderTestVideos


def test_tfds_dataset_through_the_same_pipeline(tmp_path):
  builder = _tfds_builder_class()(data_dir=str(tmp_path))
  builder.download_and_prepare()
  cfg = _cfg('', name='tfds', tfds_name='reader_test_videos', tfds_data_dir=str(tmp_path),
             num_classes=0)
  info = dataset_info(cfg)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples,
          info.num_test_examples) == (8, 6, 2, 0)
  assert info.label_names[:3] == ['zero', 'one', 'two']
  it = make_train_iterator(cfg, batch_size=6, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert sorted(batch['label']) == list(range(6)) and batch['inputs'].shape == (6, 4, H, H, 3)
  batches = list(make_eval_iterator(cfg, 'eval', 4, process_index=0, process_count=1))
  assert batches[0]['batch_mask'].tolist() == [1, 1, 0, 0]
  for inputs, label in zip(batches[0]['inputs'][:2], batches[0]['label'][:2]):
    # tfds stores PNG: lossless, and the pixels reach the model as uint8: exact.
    np.testing.assert_array_equal(inputs, _video(int(label), 5)[0:4, :, 2:14])
  with pytest.raises(FileNotFoundError, match="has no split 'test'"):
    make_eval_iterator(cfg, 'test', 4, process_index=0, process_count=1)


def test_one_frame_videos_train_and_evaluate_zero_frame_ones_are_bad(tmp_path):
  # A 1-frame video loops to the clip length; a 0-frame one is a bad record.
  records = [_good(v, num_frames=1) for v in range(23)] + [BAD_RECORDS['no_frames'](23)]
  _write(str(tmp_path / 'train.tfrecord'), records, 1)
  _write(str(tmp_path / 'eval.tfrecord'), [_good(v, num_frames=1) for v in range(3)], 1)
  it = make_train_iterator(_cfg(tmp_path), batch_size=23, seed=0, process_index=0,
                           process_count=1)
  batch = next(it)
  assert sorted(batch['label']) == list(range(23)) and it.num_bad == 1
  np.testing.assert_array_equal(batch['inputs'][:, 0], batch['inputs'][:, 3])
  assert 'record 23: no frames' in it.bad_examples[0]
  batches = list(make_eval_iterator(_cfg(tmp_path), 'eval', 4, process_index=0,
                                    process_count=1))
  assert batches[0]['batch_mask'].tolist() == [1, 1, 1, 0]
