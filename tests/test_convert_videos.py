"""Tests for data_pipelines.convert_videos on small videos written here with PyAV."""

import json
import os
import re

import av
import numpy as np
import pytest

from data_pipelines import convert_videos as C
from data_pipelines import dmvr_format
from tests import helpers

FPS = 10
NUM_FRAMES = 12


def _source_frames(seed):
  """Smooth frames (a gradient and a moving block), kind to video codecs."""
  frames = np.empty((NUM_FRAMES, 48, 64, 3), np.uint8)
  frames[:] = np.linspace(30, 220, 64).astype(np.uint8)[None, None, :, None]
  frames[..., 1] = 120 + 40 * seed
  for t in range(NUM_FRAMES):
    frames[t, 8:32, 4 * t:4 * t + 16] = (200, 60 + 50 * seed, 40)
  return frames


def _write_video(path, frames, codec='mpeg4'):
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = 'yuv420p'
    stream.bit_rate = 4_000_000
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """Three good videos (two codecs), a broken one and a CSV naming them and a missing one."""
  root = tmp_path_factory.mktemp('videos')
  for i, codec in enumerate(['mpeg4', 'libx264', 'mpeg4']):
    _write_video(str(root / f'v{i}.mp4'), _source_frames(i), codec)
  (root / 'broken.mp4').write_bytes(np.random.default_rng(0).bytes(2000))
  return root


def _write_csv(path, lines):
  path.write_text(''.join(line + '\n' for line in lines))
  return str(path)


def _read_records(output_dir, split):
  """{video id: (label, label text, decoded frames)} of one split."""
  return {r['video_id']: (r['label'], r['label_text'], helpers.decode_frames(r['frames']))
          for r in helpers.read_dmvr_records(output_dir, split)}


def test_names_broken_and_missing_videos(videos, tmp_path):
  csv_path = _write_csv(tmp_path / 'train.csv', [
      'path,label', 'v0.mp4,dog', 'v1.mp4,cat', 'broken.mp4,cat', 'missing.mp4,dog',
      'v2.mp4,dog'])
  # The videos live elsewhere: relative paths resolve against the CSV's folder.
  for name in ('v0.mp4', 'v1.mp4', 'v2.mp4', 'broken.mp4'):
    os.symlink(videos / name, tmp_path / name)
  out = tmp_path / 'out'
  report = C.convert(csv_path, f'{out}/train.tfrecord@2', num_workers=1, progress=False)
  assert (report['written'], report['skipped']) == (3, 2)
  skipped = {s['row']: s for s in report['skipped_files']}
  assert sorted(skipped) == [4, 5]
  assert skipped[4]['path'].endswith('broken.mp4') and 'InvalidData' in skipped[4]['reason']
  assert skipped[5]['reason'] == 'FileNotFoundError: file does not exist'
  with open(out / 'train.report.json') as f:
    assert json.load(f) == report
  records = _read_records(out, 'train')
  assert {k: v[:2] for k, v in records.items()} == {
      'v0.mp4': (1, 'dog'), 'v1.mp4': (0, 'cat'), 'v2.mp4': (1, 'dog')}
  for i in range(3):
    frames = records[f'v{i}.mp4'][2]
    assert frames.shape == (NUM_FRAMES, 48, 64, 3)
    error = np.abs(frames.astype(int) - _source_frames(i)).mean()
    assert error < 6, f'v{i}: mean error {error}'  # codec + JPEG
  assert (out / 'label_map.txt').read_text() == 'cat\ndog\n'
  meta = json.loads((out / 'metadata.json').read_text())
  assert meta['splits'] == {'train': 3} and meta['num_classes'] == 2
  assert meta['label_names'] == ['cat', 'dog'] and meta['tables'] == {'train': 'train.tfrecord@2'}


def test_integer_labels_fps_resize_and_merged_splits(videos, tmp_path):
  label_map = tmp_path / 'classes.txt'
  label_map.write_text('a\nb\nc\n')
  out = tmp_path / 'out'
  train = _write_csv(tmp_path / 'train.csv', [f'{videos}/v0.mp4,2', f'{videos}/v1.mp4,c'])
  C.convert(train, f'{out}/train.tfrecord@1', label_map=str(label_map), fps=5,
            min_resize=24, num_workers=1, progress=False)
  records = _read_records(out, 'train')
  label, text, frames = records[f'{videos}/v0.mp4']
  assert (label, text) == (2, 'c') and records[f'{videos}/v1.mp4'][:2] == (2, 'c')
  # 10 -> 5 fps keeps every other frame; the short side 48 -> 24.
  assert frames.shape == (NUM_FRAMES // 2, 24, 32, 3)
  source = _source_frames(0)[::2].reshape(NUM_FRAMES // 2, 24, 2, 32, 2, 3).mean((2, 4))
  assert np.abs(frames - source).mean() < 8
  # Validation without --label_map reuses the folder's map, and merges metadata.
  val = _write_csv(tmp_path / 'val.csv', [f'{videos}/v2.mp4,a'])
  C.convert(val, f'{out}/validation.tfrecord@1', num_workers=1, progress=False)
  assert _read_records(out, 'validation')[f'{videos}/v2.mp4'][:2] == (0, 'a')
  meta = json.loads((out / 'metadata.json').read_text())
  assert meta['splits'] == {'train': 2, 'validation': 1}
  assert meta['label_names'] == ['a', 'b', 'c'] and meta['num_classes'] == 3
  assert meta['tables'] == {'train': 'train.tfrecord@1',
                            'validation': 'validation.tfrecord@1'}
  other_map = tmp_path / 'other.txt'
  other_map.write_text('x\ny\n')
  with pytest.raises(ValueError, match='differs from .*label_map.txt'):
    C.convert(val, f'{out}/test.tfrecord@1', label_map=str(other_map), progress=False)


def test_parallel_workers_and_cli(videos, tmp_path):
  csv_path = _write_csv(tmp_path / 'list.csv', [
      f'{videos}/v0.mp4,0', f'{videos}/broken.mp4,1', f'{videos}/v1.mp4,1',
      f'{videos}/v2.mp4,0'])
  out = tmp_path / 'out'
  code = C.main([f'--csv={csv_path}', f'--output={out}/train.tfrecord@3', '--num_workers=2',
                 '--jpeg_quality=80', '--no_progress', '--max_skipped_fraction=0.3'])
  assert code == 0
  report = json.loads((out / 'train.report.json').read_text())
  assert (report['written'], report['skipped']) == (3, 1)
  serial = tmp_path / 'serial'
  C.convert(csv_path, f'{serial}/train.tfrecord@3', num_workers=1, jpeg_quality=80,
            progress=False)
  for shard in dmvr_format.sharded_names('train.tfrecord', 3):
    assert (out / shard).read_bytes() == (serial / shard).read_bytes()
  assert (out / 'label_map.txt').read_text() == '0\n1\n'
  broken = _write_csv(tmp_path / 'broken.csv', [f'{videos}/broken.mp4,0'])
  assert C.main([f'--csv={broken}', f'--output={tmp_path}/b/train.tfrecord@1',
                 '--num_workers=1', '--no_progress']) == 1


def test_csv_and_label_errors_name_the_file_and_row(tmp_path):
  missing = str(tmp_path / 'nope.csv')
  with pytest.raises(FileNotFoundError, match=re.escape(f"CSV file '{missing}' does not exist")):
    C.convert(missing, f'{tmp_path}/o/train.tfrecord@1', progress=False)
  empty = _write_csv(tmp_path / 'empty.csv', ['path,label'])
  with pytest.raises(ValueError, match=re.escape(f"CSV file '{empty}' has no rows")):
    C.convert(empty, f'{tmp_path}/o/train.tfrecord@1', progress=False)
  label_map = tmp_path / 'map.txt'
  label_map.write_text('cat\ndog\n')
  unknown = _write_csv(tmp_path / 'u.csv', ['a.mp4,cat', 'b.mp4,horse'])
  with pytest.raises(ValueError, match=re.escape(
      f"CSV file '{unknown}', row 2: label 'horse' is not in '{label_map}'")):
    C.convert(unknown, f'{tmp_path}/o/train.tfrecord@1', label_map=str(label_map),
              progress=False)
  out_of_range = _write_csv(tmp_path / 'r.csv', ['a.mp4,cat', 'b.mp4,5'])
  with pytest.raises(ValueError, match=r'row 2: label 5 is outside \[0, 2\)'):
    C.convert(out_of_range, f'{tmp_path}/o/train.tfrecord@1', label_map=str(label_map),
              progress=False)
  mixed = _write_csv(tmp_path / 'm.csv', ['a.mp4,cat', 'b.mp4,1'])
  with pytest.raises(ValueError, match='mixes integer labels'):
    C.convert(mixed, f'{tmp_path}/o/train.tfrecord@1', progress=False)
  three = _write_csv(tmp_path / 't.csv', ['a.mp4,cat,extra'])
  with pytest.raises(ValueError, match='row 1: expected 2 columns'):
    C.convert(three, f'{tmp_path}/o/train.tfrecord@1', progress=False)
  with pytest.raises(ValueError, match='must name a sharded table PREFIX@N'):
    C.convert(unknown, f'{tmp_path}/o/train.tfrecord', progress=False)
  assert not os.path.exists(tmp_path / 'o')  # nothing written on a bad argument
  label_map.write_text('cat\n\ndog\n')
  with pytest.raises(ValueError, match='line 2 is blank'):
    C.read_label_map(str(label_map))


def test_too_many_skipped_videos_exit_1_with_the_count_last(videos, tmp_path, capsys):
  # 2 of 3 skipped (a broken file, a missing one): the shards are written, the exit is 1.
  csv_path = _write_csv(tmp_path / 'list.csv', [
      f'{videos}/v0.mp4,0', f'{videos}/broken.mp4,1', f'{videos}/gone.mp4,1'])
  out = tmp_path / 'out'
  code = C.main([f'--csv={csv_path}', f'--output={out}/train.tfrecord@1', '--num_workers=1',
                 '--no_progress'])
  captured = capsys.readouterr()
  assert code == 1  # cli.DATA_ERROR
  assert f"Skipped '{videos}/gone.mp4' (CSV row 3): FileNotFoundError" in captured.err
  assert captured.out.strip().splitlines()[-1].startswith(
      f'train: wrote 1 videos to {out}/train.tfrecord@1; skipped 2 of 3 (')
  assert captured.err.strip().splitlines()[-1] == (
      'data_pipelines.convert_videos: error: 2 of 3 videos were skipped (66.7% > '
      f'--max_skipped_fraction=0.05); the reasons are listed above and in '
      f'{out}/train.report.json. Fix or remove those CSV rows and convert again, or raise '
      '--max_skipped_fraction.')
  assert (out / 'train.tfrecord-00000-of-00001').exists()
  assert C.main([f'--csv={csv_path}', f'--output={tmp_path}/b/train.tfrecord@1',
                 '--num_workers=1', '--no_progress', '--max_skipped_fraction=0.7']) == 0


def test_one_frame_video_is_converted(tmp_path):
  # (A video without frames is skipped with its reason; the reader's 0-frame record is
  # tested in test_reader.)
  _write_video(str(tmp_path / 'one.mp4'), _source_frames(0)[:1])
  csv_path = _write_csv(tmp_path / 'list.csv', [f'{tmp_path}/one.mp4,0'])
  report = C.convert(csv_path, f'{tmp_path}/o/train.tfrecord@1', num_workers=1,
                     progress=False)
  assert (report['written'], report['skipped']) == (1, 0)
  frames = _read_records(tmp_path / 'o', 'train')[f'{tmp_path}/one.mp4'][2]
  assert frames.shape == (1, 48, 64, 3)


def test_cli_label_error_is_one_line(tmp_path, capsys):
  label_map = tmp_path / 'map.txt'
  label_map.write_text('cat\ndog\n')
  unknown = _write_csv(tmp_path / 'u.csv', ['a.mp4,cat', 'b.mp4,horse'])
  code = C.main([f'--csv={unknown}', f'--output={tmp_path}/o/train.tfrecord@1',
                 f'--label_map={label_map}', '--no_progress'])
  assert code == 2  # cli.USAGE_ERROR
  assert capsys.readouterr().err == (
      f"data_pipelines.convert_videos: error: CSV file '{unknown}', row 2: label 'horse' is "
      f"not in '{label_map}' (2 classes: ['cat', 'dog']...). Add the class to the label map "
      'or fix the row.\n')


def test_disk_full_while_writing_a_shard_leaves_no_shard(videos, tmp_path, monkeypatch,
                                                        capsys):
  import errno  # pylint: disable=g-import-not-at-top
  csv_path = _write_csv(tmp_path / 'list.csv', [f'{videos}/v0.mp4,0', f'{videos}/v1.mp4,1'])
  real = dmvr_format.ShardedWriter.write

  def write(self, record):
    if self.num_written == 1:
      raise OSError(errno.ENOSPC, 'No space left on device', self.paths[1] + '.tmp')
    real(self, record)
  monkeypatch.setattr(dmvr_format.ShardedWriter, 'write', write)
  code = C.main([f'--csv={csv_path}', f'--output={tmp_path}/o/train.tfrecord@2',
                 '--num_workers=1', '--no_progress'])
  assert code == 74  # cli.IO_ERROR
  assert 'No space left on device; free some space' in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path / 'o')) == []  # no shard, whole or temporary


class _Frame:
  def __init__(self, name):
    self.name = name


@pytest.mark.parametrize('times,fps,expected', [
    ([0, .1, .2, .3, .4], 5, ['f0', 'f2', 'f4']),  # down: every other frame
    ([0, .2, .4], 10, ['f0', 'f0', 'f1', 'f1', 'f2']),  # up: hold the previous frame
    ([1., 1.1, 1.2], 0, ['f0', 'f1', 'f2']),  # 0 keeps every frame
    ([.5, .8, .9], 4, ['f0', 'f0']),  # targets .5, .75, 1.0 (after the last frame)
])
def test_resample_picks_the_latest_frame_at_or_before_each_target(times, fps, expected):
  timed = [(_Frame(f'f{i}'), t) for i, t in enumerate(times)]
  assert [f.name for f in C._resample(iter(timed), fps)] == expected
