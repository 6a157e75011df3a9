"""Video preprocessing ops on tf tensors: clip sampling, decoding, resizing, crops, colour.

Every random op takes an explicit stateless seed (a shape-[2] int tensor) so that the
training stream is a pure function of (seed, epoch, example position): that is what lets
the reader resume bit for bit. Ops that change a clip's appearance draw their parameters
once per clip and apply them to every frame, so motion is not confused with noise.

Frames are float32 in [0, 1] between decoding and `to_uint8`; the composite transforms
hand out uint8 pixels, which the model normalises on the device
(vivit_adapter/models/inputs.py): a quarter of float32's host memory and
host-to-device bytes.
"""

import math
from typing import List

from data_pipelines import tf_runtime

tf = tf_runtime.import_tensorflow()



# ----------------------------------------------------------------------------------------
# Clip sampling: which frame indices make up a clip.
# ----------------------------------------------------------------------------------------

def _looped_clip(start, num_available, num_frames: int, stride: int):
  """Indices start, start+stride, ... wrapped modulo the video length.

  Wrapping loops videos that are shorter than the clip instead of failing on them.
  """
  steps = tf.range(num_frames, dtype=tf.int32) * stride
  return tf.math.floormod(tf.cast(start, tf.int32) + steps, num_available)


def _max_start(num_available, num_frames: int, stride: int):
  span = (num_frames - 1) * stride + 1
  return tf.maximum(0, num_available - span)


def random_clip_indices(num_available, num_frames: int, stride: int, seed):
  """A clip of `num_frames` at `stride` starting uniformly at random (training)."""
  num_available = tf.cast(num_available, tf.int32)
  max_start = _max_start(num_available, num_frames, stride)
  start = tf.random.stateless_uniform([], seed, minval=0, maxval=max_start + 1, dtype=tf.int32)
  return _looped_clip(start, num_available, num_frames, stride)


def centre_clip_indices(num_available, num_frames: int, stride: int):
  """The clip in the middle of the video (evaluation)."""
  num_available = tf.cast(num_available, tf.int32)
  start = _max_start(num_available, num_frames, stride) // 2
  return _looped_clip(start, num_available, num_frames, stride)


def linspace_clip_indices(num_available, num_frames: int, stride: int, num_clips: int):
  """`num_clips` clips with evenly spaced starts from the first to the last frame.

  Returns (num_clips, num_frames) indices (multi-view test).
  """
  num_available = tf.cast(num_available, tf.int32)
  max_start = tf.cast(_max_start(num_available, num_frames, stride), tf.float32)
  if num_clips == 1:
    starts = tf.reshape(tf.cast(max_start // 2, tf.int32), [1])
  else:
    starts = tf.cast(tf.round(tf.linspace(0.0, max_start, num_clips)), tf.int32)
  return tf.stack([_looped_clip(s, num_available, num_frames, stride)
                   for s in tf.unstack(starts, num=num_clips)])


# ----------------------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------------------

def decode_frames(encoded, indices):
  """Decodes the frames at `indices` of a string vector of JPEG/PNG bytes.

  Each distinct frame is decoded once even if a looped or overlapping clip uses it
  several times. Frames of different sizes raise an error (a bad record).

  Returns:
    float32 frames in [0, 1], shape indices.shape + (H, W, 3).
  """
  flat = tf.reshape(indices, [-1])
  unique, position = tf.unique(flat)
  images = tf.map_fn(
      lambda b: tf.io.decode_image(b, channels=3, expand_animations=False),
      tf.gather(encoded, unique), fn_output_signature=tf.uint8)
  images = tf.gather(images, position)
  images = tf.reshape(images, tf.concat([tf.shape(indices), tf.shape(images)[1:]], 0))
  return tf.cast(images, tf.float32) / 255.0


# ----------------------------------------------------------------------------------------
# Geometry: resize, crop, flip.
# ----------------------------------------------------------------------------------------

def resize_short_side(frames, size):
  """Resizes (..., H, W, 3) frames so that min(H, W) == size, keeping the aspect ratio."""
  shape = tf.shape(frames)
  h = tf.cast(shape[-3], tf.float32)
  w = tf.cast(shape[-2], tf.float32)
  new_h, new_w = _resized_shape(h, w, tf.cast(size, tf.float32))
  new_h, new_w = tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)
  lead = shape[:-3]
  flat = tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0))
  resized = tf.image.resize(flat, tf.stack([new_h, new_w]), method='bilinear')
  return tf.reshape(resized, tf.concat([lead, [new_h, new_w, 3]], 0))


def _resized_shape(h, w, short_side):
  """(H, W) after resizing the short side of an h x w frame to `short_side`."""
  scale = short_side / tf.minimum(h, w)
  return (tf.maximum(short_side, tf.round(h * scale)),
          tf.maximum(short_side, tf.round(w * scale)))


def resized_crop(frames, short_side, top, left, crop_size: int):
  """Equals resize_short_side(frames, short_side)[..., top:top+c, left:left+c, :].

  Samples only the crop's pixels (bilinear, half-pixel centres, as tf.image.resize) so
  that a scale-jittered crop costs a crop_size^2 resize, not one of the whole frame.
  Frames are (T, H, W, 3).
  """
  shape = tf.shape(frames)
  h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  new_h, new_w = _resized_shape(h, w, tf.cast(short_side, tf.float32))
  top, left = tf.cast(top, tf.float32), tf.cast(left, tf.float32)
  # When upscaling, the first and last samples fall up to half a pixel outside the
  # frame; crop_and_resize would blend them with black where tf.image.resize repeats
  # the edge. A one-pixel symmetric pad is that edge, so sample the padded frames.
  padded = tf.pad(frames, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')

  def span(start, new_size, size):
    # Output pixel i sits at (start + i + 0.5) * size / new_size - 0.5 in the frame
    # (+1 in the padded frame); crop_and_resize wants the first and last sample as
    # fractions of the padded frame's (size + 2) - 1.
    first = (start + 0.5) * size / new_size + 0.5
    last = (start + crop_size - 0.5) * size / new_size + 0.5
    return first / (size + 1.0), last / (size + 1.0)

  y1, y2 = span(top, new_h, h)
  x1, x2 = span(left, new_w, w)
  boxes = tf.tile(tf.stack([y1, x1, y2, x2])[tf.newaxis], [shape[0], 1])
  return tf.image.crop_and_resize(padded, boxes, tf.range(shape[0]), [crop_size, crop_size])


def random_resized_crop(frames, min_resize: int, crop_size: int, min_scale: float,
                        max_scale: float, seed):
  """Scale jitter then a random square crop, the same for every frame of the clip.

  The short side is resized to min_resize * U(min_scale, max_scale) (never below
  crop_size), and a crop_size square is taken at a uniformly random position.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  scale = tf.random.stateless_uniform([], seeds[0], minval=min_scale, maxval=max_scale)
  short_side = tf.maximum(float(crop_size), tf.round(float(min_resize) * scale))
  shape = tf.cast(tf.shape(frames), tf.float32)
  new_h, new_w = _resized_shape(shape[1], shape[2], short_side)
  top = tf.random.stateless_uniform([], seeds[1], 0, tf.cast(new_h, tf.int32) - crop_size + 1,
                                    tf.int32)
  left = tf.random.stateless_uniform([], seeds[2], 0, tf.cast(new_w, tf.int32) - crop_size + 1,
                                     tf.int32)
  return resized_crop(frames, short_side, top, left, crop_size)


def _crop(frames, top, left, crop_size: int):
  return frames[..., top:top + crop_size, left:left + crop_size, :]


def centre_crop(frames, crop_size: int):
  shape = tf.shape(frames)
  return _crop(frames, (shape[-3] - crop_size) // 2, (shape[-2] - crop_size) // 2, crop_size)


def multi_crops(frames, crop_size: int, num_crops: int):
  """`num_crops` square crops evenly spaced along the long side, centred on the short one.

  With 3 crops: left/centre/right for landscape frames, top/centre/bottom for portrait
  frames, as scenic/DMVR test. Returns (num_crops,) + (..., crop, crop, 3).
  """
  if num_crops == 1:
    return centre_crop(frames, crop_size)[tf.newaxis]
  shape = tf.shape(frames)
  h, w = shape[-3], shape[-2]
  landscape = w >= h
  long_room = tf.cast(tf.where(landscape, w, h) - crop_size, tf.float32)
  short_offset = (tf.where(landscape, h, w) - crop_size) // 2
  offsets = tf.cast(tf.round(tf.linspace(0.0, long_room, num_crops)), tf.int32)
  crops = []
  for offset in tf.unstack(offsets, num=num_crops):
    top = tf.where(landscape, short_offset, offset)
    left = tf.where(landscape, offset, short_offset)
    crops.append(_crop(frames, top, left, crop_size))
  return tf.stack(crops)


def random_flip(frames, seed):
  """Flips every frame of the clip left-right with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)


# ----------------------------------------------------------------------------------------
# Colour.
# ----------------------------------------------------------------------------------------

def color_jitter(frames, strength: float, seed):
  """Brightness, contrast, saturation and hue jitter with one draw per clip.

  All four are linear maps of the colour (saturation and contrast blend with grey, hue
  rotates chroma in YIQ space), several times cheaper than going through HSV.
  """
  s = tf.random.experimental.stateless_split(seed, 4)
  amp = 0.8 * strength

  def factor(i):
    return tf.random.stateless_uniform([], s[i], 1.0 - amp, 1.0 + amp)

  frames = tf.clip_by_value(frames * factor(0), 0.0, 1.0)  # brightness
  grey = _grey(frames)
  mean = tf.reduce_mean(grey, axis=[-3, -2, -1], keepdims=True)
  frames = _blend(mean, frames, factor(1))  # contrast
  frames = _blend(_grey(frames), frames, factor(2))  # saturation
  angle = tf.random.stateless_uniform([], s[3], -0.2, 0.2) * strength * 2.0 * math.pi
  return tf.clip_by_value(_rotate_hue(frames, angle), 0.0, 1.0)


_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _rotate_hue(frames, angle):
  to_yiq = tf.constant(_RGB_TO_YIQ)
  c, s = tf.cos(angle), tf.sin(angle)
  rotation = tf.stack([tf.constant([1., 0., 0.]), tf.stack([0., c, -s]),
                       tf.stack([0., s, c])])
  matrix = tf.linalg.inv(to_yiq) @ rotation @ to_yiq
  return tf.einsum('...c,dc->...d', frames, matrix)


def _blend(degenerate, frames, factor):
  """PIL's ImageEnhance: factor 0 gives `degenerate`, 1 gives the frames."""
  return tf.clip_by_value(degenerate + factor * (frames - degenerate), 0.0, 1.0)


def _grey(frames):
  weights = tf.constant([0.299, 0.587, 0.114])
  return tf.tile(tf.reduce_sum(frames * weights, axis=-1, keepdims=True),
                 [1] * (frames.shape.rank - 1) + [3])


def _smooth(frames):
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  return tf.nn.depthwise_conv2d(frames, kernel, [1, 1, 1, 1], 'SAME')


def _auto_contrast(frames):
  lo = tf.reduce_min(frames, axis=[1, 2], keepdims=True)
  hi = tf.reduce_max(frames, axis=[1, 2], keepdims=True)
  return tf.where(hi > lo, (frames - lo) / tf.maximum(hi - lo, 1e-6), frames)


def _posterize(frames, level):
  bits = tf.clip_by_value(tf.round(8.0 - 4.0 * level), 1.0, 8.0)
  step = tf.pow(2.0, 8.0 - bits)
  return tf.floor(frames * 255.0 / step) * step / 255.0


def _projective(frames, matrix):
  """Applies a 3x3 output->input pixel map to every frame, grey fill outside."""
  matrix = matrix / matrix[2, 2]
  transform = tf.reshape(matrix, [9])[:8][tf.newaxis]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=frames, transforms=transform, output_shape=tf.shape(frames)[1:3],
      fill_value=0.5, interpolation='BILINEAR', fill_mode='CONSTANT')


def _about_centre(frames, matrix):
  shape = tf.cast(tf.shape(frames), tf.float32)
  cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
  to_centre = tf.constant([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]]) + tf.scatter_nd(
      [[0, 2], [1, 2]], tf.stack([-cx, -cy]), [3, 3])
  back = tf.constant([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]]) + tf.scatter_nd(
      [[0, 2], [1, 2]], tf.stack([cx, cy]), [3, 3])
  return _projective(frames, back @ matrix @ to_centre)


def _affine(a, b, c, d, e, f):
  return tf.stack([tf.stack([a, b, c]), tf.stack([d, e, f]),
                   tf.constant([0., 0., 1.])])


def _randaugment_ops(frames, level, sign) -> List:
  """The candidate ops, each a thunk; `level` in [0, 1] is the op's strength."""
  one, zero = tf.constant(1.0), tf.constant(0.0)
  enhance = 1.0 + sign * 0.9 * level
  angle = sign * level * 30.0 * math.pi / 180.0
  shear = sign * level * 0.3
  shape = tf.cast(tf.shape(frames), tf.float32)
  return [
      lambda: frames,
      lambda: _auto_contrast(frames),
      lambda: _blend(tf.zeros_like(frames), frames, enhance),  # brightness
      lambda: _blend(_grey(frames), frames, enhance),  # colour
      lambda: _blend(tf.reduce_mean(_grey(frames), axis=[1, 2, 3], keepdims=True),
                     frames, enhance),  # contrast
      lambda: _blend(_smooth(frames), frames, enhance),  # sharpness
      lambda: _posterize(frames, level),
      lambda: tf.where(frames < 1.0 - level, frames, 1.0 - frames),  # solarize
      lambda: _about_centre(frames, _affine(tf.cos(angle), -tf.sin(angle), zero,
                                            tf.sin(angle), tf.cos(angle), zero)),
      lambda: _about_centre(frames, _affine(one, shear, zero, zero, one, zero)),
      lambda: _about_centre(frames, _affine(one, zero, zero, shear, one, zero)),
      lambda: _projective(frames, _affine(one, zero, shear * shape[2], zero, one, zero)),
      lambda: _projective(frames, _affine(one, zero, zero, zero, one, shear * shape[1])),
  ]


NUM_RANDAUGMENT_OPS = 13


def randaugment(frames, num_layers: int, magnitude: float, seed):
  """RandAugment-style: `num_layers` ops drawn uniformly, same parameters on every frame.

  `magnitude` is on RandAugment's 0..10 scale (10 = the strongest setting of each op).
  """
  level = tf.clip_by_value(magnitude / 10.0, 0.0, 1.0)
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
    s = tf.random.experimental.stateless_split(layer_seed, 2)
    op = tf.random.stateless_uniform([], s[0], 0, NUM_RANDAUGMENT_OPS, tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], s[1]) < 0.5, -1.0, 1.0)
    frames = tf.switch_case(op, _randaugment_ops(frames, level, sign))
    frames = tf.clip_by_value(frames, 0.0, 1.0)
  return frames


def to_uint8(frames):
  """[0, 1] float frames -> uint8 pixels, rounded to the nearest level.

  The rounding (at most half a level, 0.2% of the range) is the only precision the
  uint8 hand-over costs; decoded frames are uint8 to begin with.
  """
  return tf.cast(tf.round(tf.clip_by_value(frames, 0.0, 1.0) * 255.0), tf.uint8)


# ----------------------------------------------------------------------------------------
# Composite transforms: encoded frames -> model input.
# ----------------------------------------------------------------------------------------

def train_clip(encoded, ds_cfg, seed):
  """Random clip, scale-jittered random crop, flip, colour ops -> (T, C, C, 3) uint8."""
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  indices = random_clip_indices(tf.shape(encoded)[0], ds_cfg.num_frames, ds_cfg.stride,
                                seeds[0])
  frames = decode_frames(encoded, indices)
  frames = random_resized_crop(frames, ds_cfg.min_resize, ds_cfg.crop_size,
                               ds_cfg.min_scale, ds_cfg.max_scale, seeds[1])
  if ds_cfg.flip:
    frames = random_flip(frames, seeds[3])
  if ds_cfg.color_jitter > 0:
    frames = color_jitter(frames, ds_cfg.color_jitter, seeds[4])
  if ds_cfg.randaugment_layers > 0:
    frames = randaugment(frames, ds_cfg.randaugment_layers, ds_cfg.randaugment_magnitude,
                         seeds[5])
  return tf.ensure_shape(to_uint8(frames), _clip_shape(ds_cfg))


def eval_clip(encoded, ds_cfg):
  """Centre clip, centre crop -> (T, C, C, 3) uint8."""
  indices = centre_clip_indices(tf.shape(encoded)[0], ds_cfg.num_frames, ds_cfg.stride)
  frames = resize_short_side(decode_frames(encoded, indices), ds_cfg.min_resize)
  return tf.ensure_shape(to_uint8(centre_crop(frames, ds_cfg.crop_size)),
                         _clip_shape(ds_cfg))


def test_views(encoded, ds_cfg):
  """num_test_clips evenly spaced clips x num_test_crops crops -> (V, T, C, C, 3) uint8.

  Views are ordered clip-major: view = clip * num_test_crops + crop.
  """
  indices = linspace_clip_indices(tf.shape(encoded)[0], ds_cfg.num_frames, ds_cfg.stride,
                                  ds_cfg.num_test_clips)
  frames = resize_short_side(decode_frames(encoded, indices), ds_cfg.min_resize)
  crops = multi_crops(frames, ds_cfg.crop_size, ds_cfg.num_test_crops)  # (K, N, T, C, C, 3)
  views = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                     [-1] + list(_clip_shape(ds_cfg)))
  return tf.ensure_shape(to_uint8(views), [num_test_views(ds_cfg)] + list(_clip_shape(ds_cfg)))


def num_test_views(ds_cfg) -> int:
  return ds_cfg.num_test_clips * ds_cfg.num_test_crops


def _clip_shape(ds_cfg):
  return (ds_cfg.num_frames, ds_cfg.crop_size, ds_cfg.crop_size, 3)
