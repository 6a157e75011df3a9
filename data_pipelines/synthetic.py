"""The embedded synthetic action dataset: the label is the ACTION, not the object.

In the spirit of Something-Something: a random shape (square, disc, triangle, ...) of a
random colour and size acts on a textured, noisy background among distractor objects,
under slight camera jitter. What the actor *does* is the class:

* time-reversed pairs (move left/right, up/down, grow/shrink, rotate clockwise/
  anticlockwise, fade in/out), so one frame, or frames without their order, cannot
  tell the class: both members of a pair show the same frames, in opposite order;
* compound actions whose phases split the clip in two halves (`right_then_up` vs
  `up_then_right`, and `right_then_up` vs `right_then_down` which share the first
  half exactly). An 8- or 16-frame window at stride 1 sees one phase only; 32 frames
  at stride 2 see both, so a model with more frames genuinely does better.

Motions are fast enough to see in 8 frames: a move crosses 1.5 frame widths per clip,
wrapping around the edges (so position tells nothing either), and grow/shrink and
fade in/out repeat as a sawtooth, twice per clip (`SceneConfig` holds these knobs).

Appearance (shape, colour, size, orientation) and the scene are drawn from the clip's
rng independently of the class, and every draw happens before the class is used, so
appearance never predicts the class and classes sharing a first phase share frames.

A long-clip variant (`--variant=long_events`, 128 frames) asks for many frames instead:
the actor drifts slowly and flashes white for single frames; the class is how many
flashes (0-3). A 32-frame sample of the clip (stride 4) sees each flash with
probability 1/4 and cannot count them; 128 frames see every one (docs/data.md).

Usage:
  python -m data_pipelines.synthetic --output=DIR [--seed=0] [--resolution=32]
      [--variant=actions|long_events] [--num_frames=64 (long_events: 128)]
      [--train_per_class=100] [--val_per_class=20] [--test_per_class=20] [--num_shards=4]
"""

import argparse
import colorsys
import dataclasses
import os
import sys
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tqdm

from data_pipelines import cli
from data_pipelines import dmvr_format

GENERATOR_VERSION = 2
SPLITS = ('train', 'validation', 'test')
JPEG_QUALITY = 95
SHAPES = ('square', 'disc', 'triangle', 'diamond', 'cross', 'ring', 'ellipse')


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """Difficulty knobs. Lengths are fractions of the frame side, intensities in [0, 1]."""
  # Frame widths a `move_*` travels over the clip; the actor wraps around the frame's
  # edges, so motion is fast enough to see in 8 frames and position tells nothing.
  move_travel: float = 1.5
  cycles: int = 2  # grow/shrink and fade in/out repeat (as a sawtooth) this often
  position_jitter: float = 0.2  # random offset of the actor's trajectory
  camera_jitter: float = 0.015  # std of the camera shake
  noise_std: float = 0.03  # per-pixel sensor noise
  flicker: float = 0.02  # std of the per-frame brightness gain
  max_distractors: int = 2
  moving_distractor_prob: float = 0.5


class ActorParams(NamedTuple):
  travel: float
  cycles: int
  turns: float  # full turns of a rotate action over the clip
  scale_range: tuple  # (small, large) radius factors of grow/shrink
  angle: float  # resting orientation, radians


class Motion(NamedTuple):
  """The actor's state per frame; positions relative to its trajectory's centre."""
  dx: np.ndarray
  dy: np.ndarray
  scale: np.ndarray
  angle: np.ndarray
  alpha: np.ndarray
  flash: Optional[np.ndarray] = None  # (T,) bool: the frames the actor flashes white


def _motion(u, p, dx=None, dy=None, scale=None, angle=None, alpha=None) -> Motion:
  full = lambda v, default: np.broadcast_to(default if v is None else v, u.shape)
  return Motion(full(dx, 0.), full(dy, 0.), full(scale, 1.), full(angle, p.angle),
                full(alpha, 1.))


def _sawtooth(u, p):
  """0 -> 1 ramps, `p.cycles` of them over the clip, each ending just before 1."""
  return np.mod(u * p.cycles * (1 - 1e-6), 1.)


def _phases(u):
  """Progress through the first and second half of the clip, each 0 -> 1."""
  return np.clip(2 * u, 0, 1), np.clip(2 * u - 1, 0, 1)


# Forward programs: normalised time u in [0, 1] -> Motion. Image y points down, so
# moving up decreases dy, and a positive angle turns the shape clockwise on screen.
def _move_right(u, p):
  return _motion(u, p, dx=p.travel * (u - 0.5))


def _move_down(u, p):
  return _motion(u, p, dy=p.travel * (u - 0.5))


def _grow(u, p):
  lo, hi = p.scale_range
  return _motion(u, p, scale=lo * (hi / lo) ** _sawtooth(u, p))


def _rotate_clockwise(u, p):
  return _motion(u, p, angle=p.angle + 2 * np.pi * p.turns * u)


def _fade_in(u, p):
  return _motion(u, p, alpha=_sawtooth(u, p))


# Compound actions: each phase travels half of `travel` in half the clip, the speed of
# a single `move_*`, so a window inside one phase looks like a plain move.
def _right_then(sign):
  def program(u, p):
    first, second = _phases(u)
    a = p.travel / 2
    return _motion(u, p, dx=a * (first - 0.5), dy=sign * a * second)
  return program


def _then_right(sign):
  def program(u, p):
    first, second = _phases(u)
    a = p.travel / 2
    return _motion(u, p, dx=a * second, dy=sign * a * (first - 0.5))
  return program


class Action(NamedTuple):
  name: str
  program: Optional[Callable[[np.ndarray, ActorParams], Motion]]
  reverse_of: Optional[str] = None  # this class is that class's frames played backwards


# The order fixes the label indices and the per-clip seeds: append, never reorder.
ACTIONS = (
    Action('move_right', _move_right),
    Action('move_left', None, 'move_right'),
    Action('move_down', _move_down),
    Action('move_up', None, 'move_down'),
    Action('grow', _grow),
    Action('shrink', None, 'grow'),
    Action('rotate_clockwise', _rotate_clockwise),
    Action('rotate_anticlockwise', None, 'rotate_clockwise'),
    Action('fade_in', _fade_in),
    Action('fade_out', None, 'fade_in'),
    Action('right_then_up', _right_then(-1.)),
    Action('right_then_down', _right_then(1.)),
    Action('up_then_right', _then_right(-1.)),
    Action('down_then_right', _then_right(1.)),
)
ACTION_NAMES = tuple(a.name for a in ACTIONS)


# ----------------------------------------------------------------------------------------
# The long-clip variant: brief events that a sparse sample of the clip misses.
# ----------------------------------------------------------------------------------------

# The actor flashes white (and bigger) for exactly one frame, at moments spread over the
# clip; the class is how many times. A clip of F frames read at stride 128 / F sees a
# given flash with probability F / 128, so 32 frames at stride 4 see about a quarter of
# them and cannot count them, 64 at stride 2 half, 128 every one (docs/data.md).
FLASH_COUNTS = (0, 1, 2, 3)
FLASH_SCALE = 1.4  # the flashing actor's size, times its own: a flash is easy to see
LONG_EVENTS_FRAMES = 128  # the variant's clip length
# Flash moments: one in each of MAX_FLASHES equal segments of the clip, at least
# FLASH_MARGIN frames from the segment's ends, so that flashes never touch.
MAX_FLASHES = max(FLASH_COUNTS)
FLASH_MARGIN = 2


def flash_class(count: int) -> str:
  return f'flash_x{count}'


def _draw_flashes(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """MAX_FLASHES frame indices, one per segment, in a random order: class n flashes at
  the first n. Drawn whatever the class, so the flashes shared by two classes coincide."""
  bounds = np.linspace(0, num_frames, MAX_FLASHES + 1)
  lo = np.ceil(bounds[:-1]).astype(int) + FLASH_MARGIN
  hi = np.ceil(bounds[1:]).astype(int) - 1 - FLASH_MARGIN
  if np.any(hi < lo):
    raise ValueError(f'num_frames={num_frames} is too short for {MAX_FLASHES} separate '
                     f'flashes (each needs {2 * FLASH_MARGIN + 2} frames of its own); the '
                     f'long_events variant is made at {LONG_EVENTS_FRAMES}.')
  return rng.integers(lo, hi + 1)[rng.permutation(MAX_FLASHES)]


def _flashes(count: int):
  """The program of class flash_x<count>: a slow drift, `count` one-frame flashes."""
  def program(u, p, rng):
    flashes = _draw_flashes(rng, len(u))
    # At most half a frame width over the clip: the motion is not what tells the class.
    travel, heading = rng.uniform(0, 0.5), rng.uniform(0, 2 * np.pi)
    flash = np.zeros(len(u), bool)
    flash[flashes[:count]] = True
    return _motion(u, p, dx=travel * np.cos(heading) * (u - 0.5),
                   dy=travel * np.sin(heading) * (u - 0.5),
                   scale=np.where(flash, FLASH_SCALE, 1.))._replace(flash=flash)
  return program


# Classes after ACTIONS, keyed after them (clip_rng): adding them changed no clip of the
# actions. Not in the default class set: `--variant=long_events` chooses them.
EVENT_ACTIONS = tuple(Action(flash_class(n), _flashes(n)) for n in FLASH_COUNTS)
EVENT_NAMES = tuple(a.name for a in EVENT_ACTIONS)
_FLASHES = {flash_class(n): n for n in FLASH_COUNTS}
# Every class the generator knows; a class's place here keys its clips' seeds.
_ALL_NAMES = ACTION_NAMES + EVENT_NAMES
_ACTION_BY_NAME = {a.name: a for a in ACTIONS + EVENT_ACTIONS}


class Variant(NamedTuple):
  classes: Tuple[str, ...]
  num_frames: int  # the clip length it is made at unless --num_frames says otherwise


# The default is the original dataset, unchanged; a variant is a named class set.
VARIANTS = {'actions': Variant(ACTION_NAMES, 64),
            'long_events': Variant(EVENT_NAMES, LONG_EVENTS_FRAMES)}


class _Object(NamedTuple):
  shape: int
  colour: np.ndarray  # (3,)
  radius: float
  x: np.ndarray  # (T,) centre, fraction of the side from the frame's centre
  y: np.ndarray
  angle: float = 0.


class _Scene(NamedTuple):
  """Everything random about a clip except what the class decides."""
  background: tuple  # (colour_a, colour_b, gratings (K, 4): angle, freq, phase, weight)
  camera: np.ndarray  # (T, 2)
  distractors: List[_Object]
  actor: _Object  # x, y: the trajectory's centre, constant
  actor_params: ActorParams
  gain: np.ndarray  # (T,)
  noise: np.ndarray  # (T, R, R, 1), in 0..255 units


def _random_colour(rng) -> np.ndarray:
  hue, sat, val = rng.uniform(0, 1), rng.uniform(0.55, 1), rng.uniform(0.7, 1)
  return np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32)


def _random_walk(rng, num_frames, step, decay=1.0) -> np.ndarray:
  steps = rng.normal(0, step, (num_frames, 2))
  walk = np.zeros_like(steps)
  for t in range(1, num_frames):
    walk[t] = decay * walk[t - 1] + steps[t]
  return walk


def _draw_distractor(rng, num_frames, scene: SceneConfig) -> _Object:
  shape, colour = rng.integers(len(SHAPES)), _random_colour(rng)
  radius = rng.uniform(0.06, 0.11)
  x0, y0 = rng.uniform(-0.4, 0.4, 2)
  moving = rng.uniform() < scene.moving_distractor_prob
  walk = _random_walk(rng, num_frames, 0.008, decay=0.97) * moving
  return _Object(shape, colour, radius, x0 + walk[:, 0], y0 + walk[:, 1],
                 rng.uniform(0, 2 * np.pi))


def _draw_scene(rng: np.random.Generator, resolution: int, num_frames: int,
                scene: SceneConfig) -> _Scene:
  """All of a clip's random draws, in a fixed order that does not depend on the class."""
  background = (rng.uniform(0.1, 0.55, 3), rng.uniform(0.1, 0.55, 3),
                np.stack([rng.uniform(0, np.pi, 3), rng.uniform(1, 6, 3),
                          rng.uniform(0, 2 * np.pi, 3), rng.dirichlet(np.ones(3))], 1))
  camera = _random_walk(rng, num_frames, scene.camera_jitter, decay=0.8)
  distractors = [_draw_distractor(rng, num_frames, scene)
                 for _ in range(rng.integers(scene.max_distractors + 1))]
  centre = rng.uniform(-scene.position_jitter, scene.position_jitter, 2)
  actor = _Object(rng.integers(len(SHAPES)), _random_colour(rng),
                  rng.uniform(0.1, 0.16), centre[0], centre[1])
  params = ActorParams(
      travel=scene.move_travel * rng.uniform(0.9, 1.1), cycles=scene.cycles,
      turns=rng.uniform(0.75, 1.25),
      scale_range=(rng.uniform(0.5, 0.6), rng.uniform(1.3, 1.5)),
      angle=rng.uniform(0, 2 * np.pi))
  gain = 1 + rng.normal(0, scene.flicker, num_frames)
  # Uniform noise with the requested std: as good as Gaussian here, and faster to draw.
  # Grey, as JPEG's chroma subsampling would wash out colour noise anyway.
  noise = rng.random((num_frames, resolution, resolution, 1), np.float32)
  noise_scale = np.float32(255 * scene.noise_std * np.sqrt(12))
  return _Scene(background, camera, distractors, actor, params, gain,
                (noise - np.float32(0.5)) * noise_scale)


def _signed_distance(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Approximate signed distance to a unit-radius shape, in local object units."""
  name = SHAPES[shape]
  ax, ay = np.abs(x), np.abs(y)
  norm = lambda u, v: np.sqrt(u * u + v * v)  # np.hypot is ~10x slower
  if name == 'square':
    return np.maximum(ax, ay) - 0.85
  if name == 'disc':
    return norm(x, y) - 1
  if name == 'triangle':  # equilateral, apex up, circumradius 1.2
    normals = [(0., 1.), (-0.8660254, -0.5), (0.8660254, -0.5)]
    edges = [nx * x + ny * y for nx, ny in normals]
    return np.maximum.reduce(edges) - 0.6
  if name == 'diamond':
    return (ax + ay - 1.1) / np.sqrt(2)
  if name == 'cross':
    return np.minimum(np.maximum(ax - 1, ay - 0.38), np.maximum(ax - 0.38, ay - 1))
  if name == 'ring':
    return np.abs(norm(x, y) - 0.72) - 0.28
  return (norm(x / 1.1, y / 0.6) - 1) * 0.6  # ellipse


def _extent(grid, centre, radius):
  """The grid slice an object can touch over the whole clip (shapes reach 1.2 radii)."""
  pad = grid[1] - grid[0]  # one pixel for the anti-aliased edge
  lo, hi = np.min(centre - 1.2 * radius) - pad, np.max(centre + 1.2 * radius) + pad
  return slice(int(np.searchsorted(grid, lo)), int(np.searchsorted(grid, hi)) + 1)


def _paint(frames, grid, obj: _Object, cx, cy, scale, angle, alpha, wrap=False):
  """Composites one object over (T, R, R, 3) frames in place; per-frame args are (T,).

  With `wrap`, the frame is a torus: what leaves on one side comes back on the other.
  """
  resolution = frames.shape[1]
  col = lambda v: np.asarray(v, np.float32).reshape(-1, 1, 1)
  # Work only on the rows and columns the object can reach: distractors are small.
  rows, cols = _extent(grid, cy, obj.radius * scale), _extent(grid, cx, obj.radius * scale)
  if wrap:
    rows = cols = slice(None)
  frames = frames[:, rows, cols]
  radius = col(obj.radius * scale)
  gx = grid[None, None, cols] - col(cx)
  gy = grid[None, rows, None] - col(cy)
  if wrap:
    gx, gy = np.mod(gx + 0.5, 1) - 0.5, np.mod(gy + 0.5, 1) - 0.5
  gx, gy = gx / radius, gy / radius
  cos, sin = col(np.cos(angle)), col(np.sin(angle))
  # Sample the shape in its own frame: rotate the pixel grid by -angle.
  lx, ly = cos * gx + sin * gy, -sin * gx + cos * gy
  dist_px = _signed_distance(obj.shape, lx, ly) * radius * resolution
  cover = np.clip(0.5 - dist_px, 0, 1) * col(alpha)
  # Two tones make rotation visible on every shape, discs included.
  shade = np.where(ly > 0, np.float32(0.6), np.float32(1.0))
  frames += cover[..., None] * (shade[..., None] * obj.colour - frames)


def _paint_flash(frames, grid, actor: _Object, cx, cy, motion: Motion) -> None:
  """Paints the actor white over itself on the frames `motion.flash` marks."""
  on = motion.flash
  lit = frames[on]  # a copy: _paint composites in place
  _paint(lit, grid, actor._replace(colour=np.ones(3, np.float32)), cx[on], cy[on],
         motion.scale[on], motion.angle[on], motion.alpha[on], wrap=True)
  frames[on] = lit


def _render(scene: _Scene, motion: Motion, resolution: int) -> np.ndarray:
  grid = ((np.arange(resolution) + 0.5) / resolution - 0.5).astype(np.float32)
  num_frames = len(scene.camera)
  cam = scene.camera.astype(np.float32)
  colour_a, colour_b, gratings = scene.background
  x = grid[None, None, :] + cam[:, 0, None, None]
  y = grid[None, :, None] + cam[:, 1, None, None]
  # Python floats keep the arithmetic in float32 (a numpy float64 scalar would promote).
  texture = sum(float(w) * np.sin(float(2 * np.pi * f * np.cos(a)) * x +
                                  float(2 * np.pi * f * np.sin(a)) * y + float(ph))
                for a, f, ph, w in gratings)
  colour_a, colour_b = colour_a.astype(np.float32), colour_b.astype(np.float32)
  frames = colour_a + (0.5 + 0.5 * texture)[..., None] * (colour_b - colour_a)
  ones = np.ones(num_frames)
  for obj in scene.distractors:
    _paint(frames, grid, obj, obj.x - cam[:, 0], obj.y - cam[:, 1], ones,
           ones * obj.angle, ones)
  actor = scene.actor
  cx, cy = actor.x + motion.dx - cam[:, 0], actor.y + motion.dy - cam[:, 1]
  _paint(frames, grid, actor, cx, cy, motion.scale, motion.angle, motion.alpha, wrap=True)
  if motion.flash is not None and motion.flash.any():
    _paint_flash(frames, grid, actor, cx, cy, motion)
  frames *= (255 * scene.gain[:, None, None, None]).astype(np.float32)
  frames += scene.noise
  frames += np.float32(0.5)  # rounds, as the cast truncates
  return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


def clip_frames(action: str, rng: np.random.Generator, *, resolution: int = 32,
                num_frames: int = 64, scene: SceneConfig = SceneConfig()) -> np.ndarray:
  """The (num_frames, resolution, resolution, 3) uint8 frames of one clip.

  A class and its time-reversed partner give exactly reversed frames for the same rng:
  `clip_frames('move_left', rng) == clip_frames('move_right', rng)[::-1]`.
  """
  if action not in _ACTION_BY_NAME:
    raise ValueError(f'Unknown action {action!r}; choose from {list(_ALL_NAMES)}.')
  spec = _ACTION_BY_NAME[action]
  if spec.reverse_of is not None:
    frames = clip_frames(spec.reverse_of, rng, resolution=resolution,
                         num_frames=num_frames, scene=scene)
    return np.ascontiguousarray(frames[::-1])
  drawn = _draw_scene(rng, resolution, num_frames, scene)
  u = np.linspace(0., 1., num_frames)
  if action in _FLASHES:  # its own draws come after the scene's, as the class decides
    motion = spec.program(u, drawn.actor_params, rng)
  else:
    motion = spec.program(u, drawn.actor_params)
  return _render(drawn, motion, resolution)


# The image task (vivit_adapter.studies.image_pretrain): labels that one frame shows, unlike
# the actions. fade_in is left out because its sawtooth can render the actor
# (nearly) transparent, and a label no pixel shows would only add noise.
_IMAGE_PROGRAMS = tuple(a.program for a in ACTIONS
                        if a.program is not None and a.name != 'fade_in')


class ImageExample(NamedTuple):
  frame: np.ndarray  # (R, R, 3) uint8
  shape: int  # the actor's shape, an index into SHAPES
  x: float  # the actor's centre in the frame, fractions of the side in [0, 1)
  y: float


def image_example(rng: np.random.Generator, *, resolution: int = 32,
                  scene: SceneConfig = SceneConfig()) -> ImageExample:
  """One frame of the synthetic world, with its actor's shape and position.

  The scene, distractors and actor are drawn exactly as for a clip; the actor is shown
  at a random moment of a random (non-fading) action, so the frames look like video
  frames. Shape and position are what a single frame shows; no action class depends
  on either (actions are read from how the frames change), so an image model trained
  on them is a stand-in for ImageNet pretraining, not a shortcut to the video task.
  """
  drawn = _draw_scene(rng, resolution, 1, scene)
  program = _IMAGE_PROGRAMS[rng.integers(len(_IMAGE_PROGRAMS))]
  motion = program(np.array([rng.uniform()]), drawn.actor_params)
  frame = _render(drawn, motion, resolution)[0]
  # As _paint(wrap=True) draws it: the frame is a torus, its centre at 0.5.
  x = float(np.mod(drawn.actor.x + motion.dx[0] - drawn.camera[0, 0] + 0.5, 1.))
  y = float(np.mod(drawn.actor.y + motion.dy[0] - drawn.camera[0, 1] + 0.5, 1.))
  return ImageExample(frame, int(drawn.actor.shape), x, y)


def resolve_classes(classes: Optional[Sequence[str]], variant: str = 'actions') -> List[str]:
  """The class names: `classes`, or the variant's (VARIANTS) when None."""
  if variant not in VARIANTS:
    raise ValueError(f'variant={variant!r}: choose from {list(VARIANTS)}.')
  names = list(VARIANTS[variant].classes if classes is None else classes)
  unknown = [c for c in names if c not in _ACTION_BY_NAME]
  if unknown or len(set(names)) != len(names) or len(names) < 2:
    raise ValueError(f'classes={names!r}: give at least two distinct names from '
                     f'{list(_ALL_NAMES)} (unknown: {unknown}).')
  return names


def clip_rng(seed: int, split: str, action: str, index: int) -> np.random.Generator:
  """The rng of one clip: a pure function of (seed, split, action, index).

  Keyed by the action's place in ACTIONS, not its label, so choosing a subset of
  classes does not change the clips of the classes kept.
  """
  key = [seed, SPLITS.index(split), _ALL_NAMES.index(action), index]
  return np.random.default_rng(np.random.SeedSequence(key))


def encode_frames(frames: np.ndarray) -> List[bytes]:
  """JPEG bytes per frame, at full chroma resolution.

  JPEG's usual 2x chroma subsampling at 32x32 smears the colour of a 5-pixel object
  into the background (mean error 8/255 against 3/255).
  """
  return dmvr_format.encode_jpeg_frames(frames, quality=JPEG_QUALITY,
                                        chroma_downsampling=False)


class Clip(NamedTuple):
  video_id: str
  label: int
  frames: np.ndarray  # (T, R, R, 3) uint8


def iter_clips(split: str, names: Sequence[str], per_class: int, *, seed: int,
               resolution: int, num_frames: int,
               scene: SceneConfig = SceneConfig()) -> Iterator[Clip]:
  """One split's clips, interleaved in a seeded order so that shards mix the classes."""
  order = np.random.default_rng([seed, SPLITS.index(split), 1 << 20]).permutation(
      per_class * len(names))
  for k in order:
    label, index = int(k % len(names)), int(k // len(names))
    rng = clip_rng(seed, split, names[label], index)
    frames = clip_frames(names[label], rng, resolution=resolution, num_frames=num_frames,
                         scene=scene)
    yield Clip(f'{split}-{index:06d}-{label:03d}', label, frames)


def _write_split(output_dir, split, names, per_class, num_shards, bar, **clip_args) -> int:
  prefix = os.path.join(output_dir, f'{split}.tfrecord')
  with dmvr_format.ShardedWriter(prefix, num_shards) as writer:
    for clip in iter_clips(split, names, per_class, **clip_args):
      example = dmvr_format.make_sequence_example(
          encode_frames(clip.frames), clip.label, names[clip.label], clip.video_id)
      # deterministic: else the context map's order can change from process to process.
      writer.write(example.SerializeToString(deterministic=True))
      bar.update()
  return writer.num_written


def generate(output_dir: str, *, seed: int = 0, resolution: int = 32,
             num_frames: Optional[int] = None, train_per_class: int = 100,
             val_per_class: int = 20, test_per_class: int = 20, num_shards: int = 4,
             classes: Optional[Sequence[str]] = None, scene: SceneConfig = SceneConfig(),
             progress: bool = True, variant: str = 'actions') -> Dict:
  """Writes the dataset's DMVR shards, metadata.json and label_map.txt; returns a summary.

  The same arguments give byte-identical files. A split with 0 clips per class is
  not written. `variant` (VARIANTS) gives the classes and clip length that `classes`
  and `num_frames` leave unset: 'actions' (64 frames) or 'long_events' (128).
  """
  names = resolve_classes(classes, variant)
  if num_frames is None:
    num_frames = VARIANTS[variant].num_frames
  if resolution < 16 or num_frames < 2:
    raise ValueError(f'resolution={resolution} must be >= 16 and num_frames={num_frames} '
                     '>= 2.')
  if any(n in _FLASHES for n in names):
    _draw_flashes(np.random.default_rng(0), num_frames)  # too short: the error, now
  per_class = dict(zip(SPLITS, (train_per_class, val_per_class, test_per_class)))
  if min(per_class.values()) < 0 or not per_class['train']:
    raise ValueError(f'Clips per class must be >= 0, with train > 0; got {per_class}.')
  start = time.perf_counter()
  total = sum(per_class.values()) * len(names)
  splits = {}
  with tqdm.tqdm(total=total, desc='synthetic', unit='clip', disable=not progress) as bar:
    for split in SPLITS:
      if per_class[split]:
        splits[split] = _write_split(
            output_dir, split, names, per_class[split], num_shards, bar, seed=seed,
            resolution=resolution, num_frames=num_frames, scene=scene)
  metadata = {
      'num_classes': len(names), 'label_names': names, 'splits': splits,
      'tables': {s: f'{s}.tfrecord@{num_shards}' for s in splits},
      'resolution': resolution, 'num_frames': num_frames, 'seed': seed,
      'clips_per_class': per_class, 'jpeg_quality': JPEG_QUALITY,
      'scene': dataclasses.asdict(scene),
      'reversed_pairs': {a.name: a.reverse_of for a in ACTIONS
                         if a.reverse_of in names and a.name in names},
      'source': 'data_pipelines.synthetic', 'generator_version': GENERATOR_VERSION}
  if variant != 'actions':  # only then: the default dataset's files stay byte-identical
    metadata['variant'] = variant
  dmvr_format.write_metadata(output_dir, metadata)
  return dict(metadata, output_dir=output_dir, seconds=time.perf_counter() - start)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', required=True, help='folder for the shards')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--variant', default='actions', choices=list(VARIANTS),
                      help='actions: the 14 actions, 64 frames; long_events: how many '
                      'one-frame flashes, 128 frames (docs/data.md)')
  parser.add_argument('--num_frames', type=int, default=None,
                      help="default: the variant's (64, or 128 for long_events)")
  parser.add_argument('--train_per_class', type=int, default=100)
  parser.add_argument('--val_per_class', type=int, default=20)
  parser.add_argument('--test_per_class', type=int, default=20)
  parser.add_argument('--num_shards', type=int, default=4)
  parser.add_argument('--classes', default='', help='comma-separated subset of: ' +
                      ','.join(_ALL_NAMES) + " (default: the variant's)")
  for field in dataclasses.fields(SceneConfig):
    parser.add_argument(f'--{field.name}', type=field.type, default=field.default,
                        help='scene difficulty knob')
  parser.add_argument('--no_progress', action='store_true')
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  cli.set_verbosity(args.verbosity)
  scene = SceneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SceneConfig)})
  summary = generate(
      args.output, seed=args.seed, resolution=args.resolution, num_frames=args.num_frames,
      train_per_class=args.train_per_class, val_per_class=args.val_per_class,
      test_per_class=args.test_per_class, num_shards=args.num_shards,
      classes=args.classes.split(',') if args.classes else None, scene=scene,
      progress=not args.no_progress, variant=args.variant)
  print(f'Wrote {summary["num_classes"]} classes, splits {summary["splits"]}, to '
        f'{args.output} in {summary["seconds"]:.1f}s.')
  return summary


def _main() -> None:
  with cli.usage_errors():  # a bad flag value (classes, resolution): one line
    main()


if __name__ == '__main__':
  cli.start()
  sys.exit(cli.run(_main))
