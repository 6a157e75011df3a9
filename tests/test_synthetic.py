"""Tests for data_pipelines.synthetic: the action semantics, determinism and the files."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import synthetic as S
from tests import helpers

# A clean scene (no noise, distractors, shake or flicker) makes the actor measurable.
CLEAN = S.SceneConfig(noise_std=0., flicker=0., camera_jitter=0., max_distractors=0)


def _actor_masks(action, seed, resolution=32, num_frames=64):
  """(T, R, R) bool: where the clean clip differs from the same scene without the actor."""
  rng = np.random.default_rng(seed)
  frames = S.clip_frames(action, rng, resolution=resolution, num_frames=num_frames,
                         scene=CLEAN).astype(int)
  # An invisible actor (fade_in at u = 0) leaves the background alone.
  empty = S.clip_frames('fade_in', np.random.default_rng(seed), resolution=resolution,
                        num_frames=num_frames, scene=CLEAN)[0].astype(int)
  return np.abs(frames - empty).sum(-1) > 30


def _centroids(masks):
  ys, xs = np.mgrid[:masks.shape[1], :masks.shape[2]]
  area = masks.sum((1, 2))
  return (masks * xs).sum((1, 2)) / area, (masks * ys).sum((1, 2)) / area, area


def _track(masks):
  """The actor's path in pixels, (x, y) per frame, across the frame's wrapped edges."""
  size = masks.shape[1]
  phase = 2 * np.pi * np.arange(size) / size
  def along(weights):  # circular mean, unwrapped over time
    angle = np.arctan2(weights @ np.sin(phase), weights @ np.cos(phase))
    return np.unwrap(angle) * size / (2 * np.pi)
  return along(masks.sum(1)), along(masks.sum(2))


PAIRS = [(a.reverse_of, a.name) for a in S.ACTIONS if a.reverse_of]


def test_the_five_reversed_pairs():
  assert {frozenset(p) for p in PAIRS} == {
      frozenset(p) for p in [('move_left', 'move_right'), ('move_up', 'move_down'),
                             ('grow', 'shrink'), ('fade_in', 'fade_out'),
                             ('rotate_clockwise', 'rotate_anticlockwise')]}


@pytest.mark.parametrize('forward,partner', PAIRS)
def test_reversed_partner_is_exactly_the_reversed_clip(forward, partner):
  for seed in range(3):
    a = S.clip_frames(forward, np.random.default_rng(seed))
    b = S.clip_frames(partner, np.random.default_rng(seed))
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b[::-1])
    assert not np.array_equal(a, a[::-1])  # the order is what tells them apart


def test_compound_classes_with_the_same_first_phase_share_the_first_half():
  for seed in range(3):
    up = S.clip_frames('right_then_up', np.random.default_rng(seed))
    down = S.clip_frames('right_then_down', np.random.default_rng(seed))
    np.testing.assert_array_equal(up[:32], down[:32])
    assert all(not np.array_equal(up[t], down[t]) for t in range(40, 64))


def test_single_moves_share_the_middle_frame():
  # With an odd frame count the middle frame of every move is the same picture: one
  # frame cannot tell the direction, only the order of frames can.
  frames = [S.clip_frames(a, np.random.default_rng(7), num_frames=65)[32]
            for a in ('move_right', 'move_left', 'move_up', 'move_down')]
  for f in frames[1:]:
    np.testing.assert_array_equal(frames[0], f)


def test_moves_go_where_their_names_say():
  travel = S.SceneConfig().move_travel * 32  # pixels over the clip, +-10% per clip
  for seed in range(3):
    x, y = _track(_actor_masks('move_right', seed))
    assert 0.85 * travel < x[-1] - x[0] < 1.15 * travel and abs(y[-1] - y[0]) < 1
    assert np.all(np.diff(x) > 0)
    x, y = _track(_actor_masks('move_up', seed))
    assert 0.85 * travel < y[0] - y[-1] < 1.15 * travel and abs(x[-1] - x[0]) < 1


def test_compound_phases_split_the_clip_in_halves():
  half = S.SceneConfig().move_travel * 32 / 2 * 0.85
  x, y = _track(_actor_masks('right_then_up', 3))
  assert x[31] - x[0] > half and abs(y[31] - y[0]) < 1  # right, level
  assert y[32] - y[63] > half and abs(x[63] - x[32]) < 1  # then up
  x, y = _track(_actor_masks('down_then_right', 3))
  assert y[31] - y[0] > half and abs(x[31] - x[0]) < 1
  assert x[63] - x[32] > half and abs(y[63] - y[32]) < 1


def test_grow_fade_and_rotate_change_what_their_names_say():
  # Two cycles of a sawtooth: frames 0-31 and 32-63 each grow (fade in) from the start.
  _, _, area = _centroids(_actor_masks('grow', 4, resolution=64))
  assert np.all(np.diff(area[:32:4]) > 0) and np.all(np.diff(area[32::4]) > 0)
  assert area[31] > 4 * area[0] and area[32] < area[31] / 4
  empty = S.clip_frames('fade_in', np.random.default_rng(4), scene=CLEAN)[0].astype(int)
  fade = S.clip_frames('fade_in', np.random.default_rng(4), scene=CLEAN).astype(int)
  contrast = np.abs(fade - empty).sum((1, 2, 3))
  assert contrast[0] == 0 and np.all(np.diff(contrast[:32:4]) > 0)
  assert np.all(np.diff(contrast[32::4]) > 0) and contrast[32] < contrast[31] / 10
  # The darker half of the two-tone actor turns clockwise: on screen (y down) the
  # angle of (dark centroid - actor centroid) increases.
  rng = np.random.default_rng(5)
  frames = S.clip_frames('rotate_clockwise', rng, resolution=64, scene=CLEAN)
  masks = _actor_masks('rotate_clockwise', 5, resolution=64)
  x, y, _ = _centroids(masks)
  dark = masks & (frames.sum(-1) < np.median(frames.sum(-1)[masks]))
  dx, dy, _ = _centroids(dark)
  angle = np.unwrap(np.arctan2(dy - y, dx - x)[::4])  # a noisy estimate: fit a line
  slope = np.polyfit(np.arange(len(angle)) / (len(angle) - 1), angle, 1)[0]
  assert 0.6 * 2 * np.pi < slope < 1.4 * 2 * np.pi  # 0.75 to 1.25 turns per clip


def test_64x64_and_other_frame_counts():
  frames = S.clip_frames('shrink', np.random.default_rng(0), resolution=64, num_frames=48)
  assert frames.shape == (48, 64, 64, 3)
  with pytest.raises(ValueError, match="Unknown action 'jump'"):
    S.clip_frames('jump', np.random.default_rng(0))


def _read_split(directory, split):
  """(label, label text, video id, encoded frames) of every record of one split."""
  return [(r['label'], r['label_text'], r['video_id'], r['frames'])
          for r in helpers.read_dmvr_records(directory, split)]


TINY = dict(resolution=16, num_frames=12, train_per_class=3, val_per_class=2,
            test_per_class=1, num_shards=2, progress=False)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('synthetic'))
  return out, S.generate(out, seed=3, **TINY)


def _file_bytes(directory):
  return {os.path.basename(p): open(p, 'rb').read()
          for p in sorted(glob.glob(os.path.join(directory, '*')))}


def test_generate_is_byte_deterministic_per_seed(tiny, tmp_path):
  out, _ = tiny
  # Another process: protobuf map order and hash seeds differ between processes.
  subprocess.run(
      [sys.executable, '-m', 'data_pipelines.synthetic', f'--output={tmp_path / "same"}',
       '--seed=3', '--no_progress'] + [f'--{k}={v}' for k, v in TINY.items() if k != 'progress'],
      check=True, capture_output=True)
  S.generate(str(tmp_path / 'other'), seed=4, **TINY)
  first, same, other = (_file_bytes(d) for d in (out, tmp_path / 'same', tmp_path / 'other'))
  assert len(first) == 3 * 2 + 2 and first == same
  shards = [n for n in first if '.tfrecord-' in n]
  assert all(first[n] != other[n] for n in shards)


def test_splits_are_balanced_and_decode(tiny):
  out, summary = tiny
  names = list(S.ACTION_NAMES)
  ids = set()
  for split, per_class in (('train', 3), ('validation', 2), ('test', 1)):
    records = _read_split(out, split)
    labels = [r[0] for r in records]
    assert np.bincount(labels, minlength=len(names)).tolist() == [per_class] * len(names)
    assert all(names[label] == text for label, text, _, _ in records)
    assert labels != sorted(labels)  # shards mix the classes
    ids.update(r[2] for r in records)
    video = tf.stack([tf.io.decode_jpeg(f) for f in records[0][3]]).numpy()
    assert video.shape == (12, 16, 16, 3)
  assert len(ids) == summary['num_classes'] * 6  # ids unique across splits


def test_written_frames_are_the_generated_clip(tiny):
  out, _ = tiny
  label, _, video_id, jpegs = _read_split(out, 'validation')[0]
  split, index, _ = video_id.split('-')
  rng = S.clip_rng(3, split, S.ACTION_NAMES[label], int(index))
  expected = S.clip_frames(S.ACTION_NAMES[label], rng, resolution=16, num_frames=12)
  decoded = np.stack([tf.io.decode_jpeg(f).numpy() for f in jpegs])
  assert np.abs(decoded.astype(int) - expected).mean() < 4  # JPEG at quality 95
  other = S.clip_frames(S.ACTION_NAMES[label], rng, resolution=16, num_frames=12)
  assert np.abs(decoded.astype(int) - other).mean() > 10


def test_metadata_and_label_map(tiny):
  out, summary = tiny
  with open(os.path.join(out, 'metadata.json')) as f:
    meta = json.load(f)
  assert meta['num_classes'] == len(S.ACTION_NAMES) == summary['num_classes']
  assert meta['label_names'] == list(S.ACTION_NAMES)
  assert meta['splits'] == {'train': 3 * 14, 'validation': 2 * 14, 'test': 14}
  assert meta['tables'] == {s: f'{s}.tfrecord@2' for s in S.SPLITS}
  assert (meta['resolution'], meta['num_frames'], meta['seed']) == (16, 12, 3)
  assert meta['reversed_pairs']['move_left'] == 'move_right'
  assert meta['generator_version'] == S.GENERATOR_VERSION
  with open(os.path.join(out, 'label_map.txt')) as f:
    assert f.read() == ''.join(n + '\n' for n in S.ACTION_NAMES)


def test_cli_with_a_class_subset_and_scene_flags(tmp_path):
  summary = S.main([f'--output={tmp_path}', '--resolution=16', '--num_frames=8',
                    '--train_per_class=2', '--val_per_class=1', '--test_per_class=0',
                    '--num_shards=1', '--classes=grow,move_left', '--noise_std=0',
                    '--no_progress'])
  assert summary['label_names'] == ['grow', 'move_left']
  assert summary['splits'] == {'train': 4, 'validation': 2}  # an empty split is skipped
  assert summary['scene']['noise_std'] == 0.
  assert sorted(os.listdir(tmp_path)) == [
      'label_map.txt', 'metadata.json', 'train.tfrecord-00000-of-00001',
      'validation.tfrecord-00000-of-00001']
  assert [r[1] for r in _read_split(str(tmp_path), 'validation')].count('move_left') == 1


def test_generate_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match=r"unknown: \['jump'\]"):
    S.generate(str(tmp_path), classes=['grow', 'jump'])
  with pytest.raises(ValueError, match='resolution=8 must be >= 16'):
    S.generate(str(tmp_path), resolution=8)
  with pytest.raises(ValueError, match='with train > 0'):
    S.generate(str(tmp_path), train_per_class=0)
  assert not os.listdir(tmp_path)


def test_tfds_builder_builds_offline_and_matches_the_shards(tiny, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthetic_tfds  # pylint: disable=g-import-not-at-top
  config = synthetic_tfds.SyntheticActionsConfig(
      name='small', resolution=16, num_frames=12, train_per_class=3, val_per_class=2,
      test_per_class=1, seed=3)
  datasets, info = tfds.load('synthetic_actions', data_dir=str(tmp_path), with_info=True,
                             builder_kwargs={'config': config},
                             download_and_prepare_kwargs={'download_config':
                                                          tfds.download.DownloadConfig(
                                                              try_download_gcs=False)})
  assert info.features['label'].names == list(S.ACTION_NAMES)
  assert info.features['video'].shape == (12, 16, 16, 3)
  assert {k: v.num_examples for k, v in info.splits.items()} == {
      'train': 42, 'validation': 28, 'test': 14}
  # Same clips as the DMVR shards of the same settings, keyed by label and frames.
  shards = {(label, tf.io.decode_jpeg(jpegs[0]).numpy().tobytes())
            for label, _, _, jpegs in _read_split(tiny[0], 'validation')}
  loaded = {(int(ex['label']), ex['video'][0].numpy().tobytes())
            for ex in datasets['validation']}
  assert loaded == shards
  tiny_info = tfds.builder('synthetic_actions/tiny').info
  assert tiny_info.features['video'].shape == (16, 16, 16, 3)


# ----------------------------------------------------------------------------------------
# The long-clip variant (long_events): the class is the number of one-frame flashes.
# ----------------------------------------------------------------------------------------

def _flashing(frames):
  """(T,) bool: the frames whose actor is white, read from the pixels alone. No other
  pixel of a scene is near-white: backgrounds stop at 0.55, actors and distractors are
  saturated colours (min channel <= 0.45)."""
  return (frames.min(-1) > 200).sum((1, 2)) >= 3


@pytest.fixture(scope='module')
def event_clips():
  """(labels, flashing frames (N, 128)): 25 test clips per class, the default scene."""
  labels, flashing = [], []
  for name in S.EVENT_NAMES:
    for index in range(25):
      frames = S.clip_frames(name, S.clip_rng(0, 'test', name, index), num_frames=128)
      labels.append(int(name.rsplit('x', 1)[1]))
      flashing.append(_flashing(frames))
  return np.array(labels), np.array(flashing)


def _reader_eval_indices(num_frames):
  """The frames the reader's evaluation clip takes of a 128-frame video when the clip
  spans it, as the frames study reads it (stride 128 / num_frames)."""
  from data_pipelines import video_ops  # pylint: disable=g-import-not-at-top
  return video_ops.centre_clip_indices(128, num_frames, 128 // num_frames).numpy()


def _best_rule_accuracy(labels, seen):
  """Accuracy of the best map from the number of flashes seen to a class, fitted on
  these very clips: an upper bound for any rule that counts the flashes a sample shows."""
  return sum(np.bincount(labels[seen == m]).max() for m in set(seen)) / len(labels)


def test_long_events_are_countable_at_128_frames_but_not_at_32(event_clips):
  labels, flashing = event_clips
  accuracy = {}
  for frames in (32, 64, 128):
    seen = flashing[:, _reader_eval_indices(frames)].sum(1)
    accuracy[frames] = _best_rule_accuracy(labels, seen)
    if frames == 128:
      np.testing.assert_array_equal(seen, labels)  # every flash, on every clip
  # Expected (binomial, each flash seen with probability frames / 128): 39% and 50%.
  assert accuracy[32] < 0.5 and accuracy[64] < 0.65 and accuracy[128] == 1.
  assert accuracy[32] < accuracy[64]


def test_long_events_flash_once_per_frame_apart_and_share_their_moments():
  for seed in range(3):
    clips = {n: S.clip_frames(S.flash_class(n), np.random.default_rng(seed),
                              num_frames=128, resolution=16) for n in S.FLASH_COUNTS}
    assert clips[3].shape == (128, 16, 16, 3) and clips[3].dtype == np.uint8
    flashing = {n: _flashing(c) for n, c in clips.items()}
    assert [f.sum() for f in flashing.values()] == list(S.FLASH_COUNTS)
    where = np.flatnonzero(flashing[3])
    assert np.all(np.diff(where) > 2 * S.FLASH_MARGIN)  # never adjacent: countable
    # Class n flashes at the first n of the same moments: nothing else tells them apart.
    for n in (1, 2):
      assert set(np.flatnonzero(flashing[n])) < set(np.flatnonzero(flashing[n + 1]))
    calm = ~flashing[3]
    np.testing.assert_array_equal(clips[0][calm], clips[3][calm])


def test_the_long_events_variant_through_the_cli(tmp_path):
  args = ['--variant=long_events', '--resolution=16', '--train_per_class=1',
          '--val_per_class=1', '--test_per_class=0', '--num_shards=1', '--no_progress']
  summary = S.main([f'--output={tmp_path / "one"}'] + args)
  assert summary['label_names'] == ['flash_x0', 'flash_x1', 'flash_x2', 'flash_x3']
  assert (summary['num_frames'], summary['variant']) == (128, 'long_events')
  label, _, video_id, jpegs = _read_split(str(tmp_path / 'one'), 'validation')[0]
  index = int(video_id.split('-')[1])
  expected = S.clip_frames(S.EVENT_NAMES[label], S.clip_rng(0, 'validation',
                                                            S.EVENT_NAMES[label], index),
                           resolution=16, num_frames=128)
  decoded = np.stack([tf.io.decode_jpeg(f).numpy() for f in jpegs])
  assert decoded.shape == (128, 16, 16, 3)
  assert np.abs(decoded.astype(int) - expected).mean() < 4  # JPEG at quality 95
  S.main([f'--output={tmp_path / "again"}'] + args)
  assert _file_bytes(tmp_path / 'one') == _file_bytes(tmp_path / 'again')
  with pytest.raises(ValueError, match='num_frames=12 is too short for 3 separate flashes'):
    S.generate(str(tmp_path / 'short'), variant='long_events', num_frames=12)
  assert not os.path.exists(tmp_path / 'short')  # the error comes before any file
  with pytest.raises(ValueError, match="variant='long': choose from"):
    S.generate(str(tmp_path / 'bad'), variant='long')


def test_the_actions_keep_their_clips_and_their_default():
  # The event classes come after the actions: the actions' seeds (keyed by place) and
  # the default class set are the original dataset's.
  assert S.resolve_classes(None) == list(S.ACTION_NAMES) and len(S.ACTION_NAMES) == 14
  key = np.random.SeedSequence([0, 0, S.ACTION_NAMES.index('grow'), 5]).entropy
  assert S.clip_rng(0, 'train', 'grow', 5).bit_generator.seed_seq.entropy == key
  assert S.clip_rng(0, 'train', 'flash_x0', 0).bit_generator.seed_seq.spawn_key == ()
  assert list(S.clip_rng(0, 'train', 'flash_x0', 0).bit_generator.seed_seq.entropy) == [
      0, 0, 14, 0]
