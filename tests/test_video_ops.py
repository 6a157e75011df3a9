"""Tests for data_pipelines.video_ops: sampling, geometry and colour ops against numpy."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import video_ops
from vivit_adapter import configs

SEED = tf.constant([3, 4], tf.int64)


def _np(x):
  return np.asarray(x.numpy() if hasattr(x, 'numpy') else x)


@pytest.mark.parametrize('available,num_frames,stride', [(30, 4, 2), (7, 4, 1), (10, 8, 2)])
def test_random_clip_indices_follow_stride_and_loop(available, num_frames, stride):
  starts = set()
  for i in range(40):
    idx = _np(video_ops.random_clip_indices(available, num_frames, stride,
                                            tf.constant([i, 0], tf.int64)))
    start = idx[0]
    np.testing.assert_array_equal(idx, (start + stride * np.arange(num_frames)) % available)
    assert 0 <= start <= max(0, available - ((num_frames - 1) * stride + 1))
    starts.add(int(start))
  if available > (num_frames - 1) * stride + 1:
    assert len(starts) > 1  # the start really is random
  else:
    assert starts == {0}  # too short: loops from the first frame


def test_centre_clip_indices():
  # 20 frames, span (4-1)*2+1 = 7, room 13 -> start 6.
  np.testing.assert_array_equal(_np(video_ops.centre_clip_indices(20, 4, 2)), [6, 8, 10, 12])
  np.testing.assert_array_equal(_np(video_ops.centre_clip_indices(3, 4, 1)), [0, 1, 2, 0])


def test_linspace_clip_indices_are_evenly_spaced():
  idx = _np(video_ops.linspace_clip_indices(25, 4, 2, 3))  # room 25 - 7 = 18
  np.testing.assert_array_equal(idx[:, 0], [0, 9, 18])
  np.testing.assert_array_equal(idx - idx[:, :1], np.tile(2 * np.arange(4), (3, 1)))
  np.testing.assert_array_equal(_np(video_ops.linspace_clip_indices(25, 4, 2, 1)),
                                [[9, 11, 13, 15]])
  np.testing.assert_array_equal(_np(video_ops.linspace_clip_indices(2, 3, 1, 2)),
                                [[0, 1, 0], [0, 1, 0]])


def test_decode_frames_gathers_lossless_frames():
  frames = np.stack([np.full((6, 8, 3), 10 * t, np.uint8) for t in range(5)])
  encoded = tf.constant([tf.io.encode_png(f).numpy() for f in frames])
  out = _np(video_ops.decode_frames(encoded, tf.constant([[4, 1], [1, 1]])))
  assert out.shape == (2, 2, 6, 8, 3)
  np.testing.assert_allclose(out[:, :, 0, 0, 0] * 255, [[40, 10], [10, 10]], atol=1e-4)


def test_decode_frames_rejects_mixed_sizes():
  encoded = tf.constant([tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy(),
                         tf.io.encode_png(np.zeros((5, 4, 3), np.uint8)).numpy()])
  with pytest.raises((tf.errors.OpError, ValueError)):  # ValueError when eager
    video_ops.decode_frames(encoded, tf.constant([0, 1]))
  graph_fn = tf.function(video_ops.decode_frames)
  with pytest.raises(tf.errors.InvalidArgumentError):
    graph_fn(encoded, tf.constant([0, 1]))


def test_resize_short_side_keeps_aspect():
  out = video_ops.resize_short_side(tf.zeros([2, 30, 40, 3]), 15)
  assert tuple(out.shape) == (2, 15, 20, 3)
  out = video_ops.resize_short_side(tf.zeros([3, 2, 50, 20, 3]), 10)
  assert tuple(out.shape) == (3, 2, 25, 10, 3)


# (20, 0, 0) and (20, 12, 22) upscale and touch the frame's first and last pixels, where
# the crop must repeat the edge as tf.image.resize does, not fade to black.
@pytest.mark.parametrize('short_side,top,left', [(12, 0, 0), (17, 3, 9), (20, 5, 2),
                                                 (20, 0, 0), (20, 12, 22)])
def test_resized_crop_equals_resize_then_crop(short_side, top, left):
  frames = tf.random.stateless_uniform([2, 12, 18, 3], [1, 2])
  full = _np(video_ops.resize_short_side(frames, short_side))
  expected = full[:, top:top + 8, left:left + 8]
  got = _np(video_ops.resized_crop(frames, short_side, top, left, 8))
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_random_resized_crop_shape_and_determinism():
  frames = tf.random.stateless_uniform([3, 20, 30, 3], [1, 2])
  a = video_ops.random_resized_crop(frames, 16, 12, 0.8, 1.3, SEED)
  b = video_ops.random_resized_crop(frames, 16, 12, 0.8, 1.3, SEED)
  assert tuple(a.shape) == (3, 12, 12, 3)
  np.testing.assert_array_equal(_np(a), _np(b))


def test_centre_crop():
  frames = np.arange(1 * 6 * 8 * 3, dtype=np.float32).reshape(1, 6, 8, 3)
  np.testing.assert_array_equal(_np(video_ops.centre_crop(frames, 4)), frames[:, 1:5, 2:6])


@pytest.mark.parametrize('shape,slices', [
    ((6, 12), [(1, 0), (1, 4), (1, 8)]),  # landscape: left, centre, right
    ((12, 6), [(0, 1), (4, 1), (8, 1)]),  # portrait: top, centre, bottom
])
def test_multi_crops_along_the_long_side(shape, slices):
  frames = np.random.default_rng(0).random((2,) + shape + (3,)).astype(np.float32)
  crops = _np(video_ops.multi_crops(frames, 4, 3))
  assert crops.shape == (3, 2, 4, 4, 3)
  for crop, (top, left) in zip(crops, slices):
    np.testing.assert_array_equal(crop, frames[:, top:top + 4, left:left + 4])
  np.testing.assert_array_equal(_np(video_ops.multi_crops(frames, 4, 1))[0],
                                _np(video_ops.centre_crop(frames, 4)))


def test_random_flip_is_a_whole_clip_mirror_or_identity():
  frames = tf.random.stateless_uniform([3, 4, 5, 3], [0, 1])
  outcomes = set()
  for i in range(16):
    out = _np(video_ops.random_flip(frames, tf.constant([i, 1], tf.int64)))
    if np.array_equal(out, _np(frames)):
      outcomes.add('same')
    else:
      np.testing.assert_array_equal(out, _np(frames)[:, :, ::-1])
      outcomes.add('flipped')
  assert outcomes == {'same', 'flipped'}


def test_to_uint8_rounds_to_the_nearest_level_and_round_trips_decoded_pixels():
  levels = np.arange(256, dtype=np.uint8)
  # Decoded pixels (level / 255) come back exactly.
  np.testing.assert_array_equal(_np(video_ops.to_uint8(tf.constant(levels / 255.0,
                                                                   tf.float32))), levels)
  x = tf.constant([-0.1, 0.0, 0.4 / 255, 0.6 / 255, 100.4 / 255, 1.0, 1.5])
  np.testing.assert_array_equal(_np(video_ops.to_uint8(x)), [0, 0, 0, 1, 100, 255, 255])
  assert video_ops.to_uint8(x).dtype == tf.uint8


def _same_frames(n=4):
  frame = tf.random.stateless_uniform([1, 10, 12, 3], [5, 6])
  return tf.tile(frame, [n, 1, 1, 1])


def test_color_jitter_identity_at_zero_and_same_on_every_frame():
  frames = _same_frames()
  np.testing.assert_allclose(_np(video_ops.color_jitter(frames, 0.0, SEED)), _np(frames),
                             atol=1e-5)
  out = _np(video_ops.color_jitter(frames, 0.8, SEED))
  assert not np.allclose(out, _np(frames), atol=1e-3)
  np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), atol=1e-6)
  assert out.min() >= 0 and out.max() <= 1


def test_hue_rotation_keeps_grey_and_full_turn_is_identity():
  grey = tf.fill([1, 2, 2, 3], 0.4)
  np.testing.assert_allclose(_np(video_ops._rotate_hue(grey, tf.constant(1.0))), _np(grey),
                             atol=1e-5)
  frames = tf.random.stateless_uniform([1, 3, 3, 3], [1, 1])
  np.testing.assert_allclose(_np(video_ops._rotate_hue(frames, tf.constant(2 * np.pi))),
                             _np(frames), atol=1e-5)


def test_every_randaugment_op_is_the_same_on_every_frame():
  frames = _same_frames(3)
  for op in range(video_ops.NUM_RANDAUGMENT_OPS):
    out = _np(video_ops._randaugment_ops(frames, tf.constant(0.7), tf.constant(1.0))[op]())
    assert out.shape == tuple(frames.shape), op
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), atol=1e-6,
                               err_msg=f'op {op}')


def test_randaugment_zero_magnitude_geometry_is_identity():
  frames = _same_frames(2)
  for op in (8, 9, 10, 11, 12):  # rotate, shear x/y, translate x/y
    out = _np(video_ops._randaugment_ops(frames, tf.constant(0.0), tf.constant(1.0))[op]())
    np.testing.assert_allclose(out, _np(frames), atol=1e-5, err_msg=f'op {op}')


def test_randaugment_deterministic_and_in_range():
  frames = tf.random.stateless_uniform([2, 8, 8, 3], [7, 7])
  a = _np(video_ops.randaugment(frames, 3, 9, SEED))
  b = _np(video_ops.randaugment(frames, 3, 9, SEED))
  np.testing.assert_array_equal(a, b)
  assert a.min() >= 0 and a.max() <= 1


def _cfg(**overrides):
  ds = configs.base_config().dataset
  ds.update(dict(num_frames=3, stride=1, min_resize=8, crop_size=8, num_test_clips=2,
                 num_test_crops=3), **overrides)
  return ds


def _index_video(num_frames, h, w):
  """PNG frames whose red channel is 10 * frame index and green 10 * column."""
  frames = np.zeros((num_frames, h, w, 3), np.uint8)
  frames[..., 0] = 10 * np.arange(num_frames)[:, None, None]
  frames[..., 1] = 10 * np.arange(w)[None, None, :]
  return tf.constant([tf.io.encode_png(f).numpy() for f in frames])


def test_test_views_are_clip_major():
  views = _np(video_ops.test_views(_index_video(10, 8, 12), _cfg()))
  assert views.shape == (6, 3, 8, 8, 3) and views.dtype == np.uint8
  pixels = views.astype(np.int64)
  for v in range(6):
    clip, crop = divmod(v, 3)
    np.testing.assert_array_equal(pixels[v, :, 0, 0, 0], 10 * (np.arange(3) + 7 * clip))
    assert pixels[v, 0, 0, 0, 1] == 10 * [0, 2, 4][crop]


def test_eval_clip_and_train_clip_shapes():
  encoded = _index_video(5, 10, 14)
  cfg = _cfg(color_jitter=0.5, randaugment_layers=2)
  assert tuple(video_ops.eval_clip(encoded, cfg).shape) == (3, 8, 8, 3)
  out = _np(video_ops.train_clip(encoded, cfg, SEED))
  assert out.shape == (3, 8, 8, 3) and out.dtype == np.uint8 and out.max() > 0
  np.testing.assert_array_equal(out, _np(video_ops.train_clip(encoded, cfg, SEED)))
