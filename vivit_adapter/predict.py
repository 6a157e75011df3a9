r"""Classifies one video file, or many, with a trained run.

  python -m vivit_adapter.predict --workdir=runs/synthetic_stage2 --video=clip.mp4 \
      [--step=N] [--top_k=5] [--fps=0] [--label_map=FILE]
  python -m vivit_adapter.predict --workdir=RUN --videos=DIR|GLOB|LIST.csv|FILE \
      --out=preds.jsonl|preds.csv [--num_clips=0 --num_crops=0] [--batch_size=8]
      [--workers=4] [--noprogress]

--videos scores many videos with the test's views (batch_predict.py): every video gets a
line in --out; a video that cannot be read gets its error on its line, the others go
on, and the command then exits DATA_ERROR (1) after writing every line. The rest of this
docstring is about --video, one video printed to stdout.

Uses the run's saved config (config.json) and checkpoint, and the run's evaluation
transform: the centre clip of num_frames at the configured stride, short side resized
to min_resize, a centre crop, the model's normalisation. The stride counts frames of
the video as decoded, so a video whose dataset was converted with --fps should be
predicted with the same --fps. The whole video is decoded into memory at its own
resolution (as the converter does), so cut long videos to the part to classify first.

The inputs (video, workdir, label map) are checked, and the video decoded, before the
checkpoint is loaded; only the result is printed (--verbosity=0 for our INFO lines, 1
for the libraries' too). Errors (missing or undecodable video, a workdir without
config.json or checkpoint, a checkpoint that does not fit its config.json) print one line
and exit with the codes of data_pipelines.cli (docs/training.md, "Errors and exit codes").
"""

import dataclasses
import os
import sys
from typing import List, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np

from data_pipelines import cli
from data_pipelines import convert_videos
from data_pipelines import dmvr_format
from data_pipelines import fs
from data_pipelines import tf_runtime
from vivit_adapter import configs


@dataclasses.dataclass(frozen=True)
class Prediction:
  index: int
  label: str
  probability: float


@dataclasses.dataclass(frozen=True)
class Result:
  step: int
  num_classes: int
  top: List[Prediction]


def read_video(path: str, fps: float = 0.) -> np.ndarray:
  """(T, H, W, 3) uint8 frames of a video file; errors name the file."""
  if not fs.isfile(path):
    raise FileNotFoundError(f'--video={path!r} does not exist or is not a file.')
  try:
    return convert_videos.decode_video(path, fps=fps)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # PyAV raises many types (InvalidDataError, DecoderNotFoundError, ...): all mean
    # "this file is not a video we can read".
    raise ValueError(f'--video={path!r} could not be decoded as a video: '
                     f'{type(e).__name__}: {e}') from e


def eval_transform(frames: np.ndarray, ds_cfg) -> np.ndarray:
  """The training pipeline's `video_ops.eval_clip` on decoded frames -> (T, C, C, 3) uint8,
  which the model normalises itself.

  eval_clip takes encoded frames, as a record stores them; PNG is lossless, so the clip
  sees exactly the decoded pixels. Compression level 0 (stored, not deflated) keeps the
  encoding a copy.
  """
  # pylint: disable=g-import-not-at-top
  from data_pipelines import video_ops
  # pylint: enable=g-import-not-at-top
  tf = tf_runtime.import_tensorflow()
  encoded = tf.map_fn(lambda f: tf.io.encode_png(f, compression=0),
                      tf.convert_to_tensor(frames), fn_output_signature=tf.string)
  return video_ops.eval_clip(encoded, ds_cfg).numpy()


def label_names(ds_cfg, num_classes: int, label_map: str = '') -> Optional[List[str]]:
  """Class names from `label_map`, else the run's dataset label map; None if unavailable."""
  path = (label_map or ds_cfg.label_map or
          os.path.join(ds_cfg.base_dir, dmvr_format.LABEL_MAP_FILE))
  if label_map and not fs.exists(label_map):
    raise FileNotFoundError(f'--label_map={label_map!r} does not exist.')
  if not fs.exists(path):
    logging.warning('No label map at %s: printing class indices.', path)
    return None
  names = dmvr_format.read_label_map(path)
  if len(names) != num_classes:
    logging.warning('%s names %d classes but the model has %d: printing class indices.',
                    path, len(names), num_classes)
    return None
  return names


def load_run(workdir: str, step: int = -1, config=None):
  """(config, model, params, step) of a trained run; num_classes is read off the head."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter import checkpoints
  from vivit_adapter import models
  from vivit_adapter.checkpoints import workdir as workdir_checkpoints
  # pylint: enable=g-import-not-at-top
  config = config or configs.load_saved(workdir)
  _, step = workdir_checkpoints.find_checkpoint_step(workdir, step)
  params = checkpoints.restore_workdir_params(workdir, step)
  if 'output_projection' not in params:
    raise ValueError(f'The checkpoint in {workdir} has no output_projection (a '
                     f'classifier head); its top-level names are {sorted(params)}.')
  num_classes = params['output_projection']['kernel'].shape[-1]
  model = models.create_model(config.model, num_classes, config.dataset.normalization)
  return config, model, params, step


def check_fits(model, params, clip: np.ndarray, workdir: str) -> None:
  """The checkpoint's parameters have the shapes the saved config's model needs.

  Raises:
    cli.CheckpointMismatchError: a summary line (which sizes differ), then the tensors.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from vivit_adapter.checkpoints import merge
  # pylint: enable=g-import-not-at-top
  video = jax.ShapeDtypeStruct((1,) + clip.shape, clip.dtype)
  wanted = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v), video)['params']
  model_shapes = {k: tuple(v.shape) for k, v in merge.flatten(wanted).items()}
  saved = {k: tuple(np.shape(v)) for k, v in merge.flatten(params).items()}
  missing = [k for k in model_shapes if k not in saved]
  unexpected = [k for k in saved if k not in model_shapes]
  mismatched = [k for k in model_shapes if k in saved and saved[k] != model_shapes[k]]
  if missing or unexpected or mismatched:
    raise cli.CheckpointMismatchError(merge.mismatch_message(
        f'in {workdir}', model_shapes, saved, missing, unexpected, mismatched).replace(
            'Check that config.model', f'Its config.json does not describe it; check that '
            'config.model', 1))


def check_finite(params, workdir: str, step: int) -> None:
  """A checkpoint with NaN or inf parameters answers nothing: refused in one line."""
  from vivit_adapter.train_lib import finite  # pylint: disable=g-import-not-at-top
  bad = finite.nonfinite_names(params)
  if bad:
    raise cli.DivergedError(
        f'The checkpoint of step {step} in {workdir} is not finite ({finite.describe(bad)}): '
        'its training diverged. Use an earlier --step, or retrain with a lower '
        'config.lr_configs.base_learning_rate.')


def probabilities(model, params, clip: np.ndarray) -> np.ndarray:
  """Softmax over classes for one (T, C, C, 3) clip."""
  import jax  # pylint: disable=g-import-not-at-top
  logits = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))(
      params, clip[np.newaxis])
  return np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1)[0])


def top_k(probs: np.ndarray, k: int, names: Optional[List[str]]) -> List[Prediction]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [Prediction(int(i), names[i] if names else f'class_{i}', float(probs[i]))
          for i in order]


def predict(workdir: str, video: str, step: int = -1, k: int = 5, fps: float = 0.,
            label_map: str = '') -> Result:
  """The `k` most probable classes of `video` under the run in `workdir`.

  Everything the user gave is checked (and the video decoded) before the checkpoint is
  read: a typo costs no checkpoint load.
  """
  if not fs.isfile(video):
    raise FileNotFoundError(f'--video={video!r} does not exist or is not a file.')
  if label_map and not fs.exists(label_map):
    raise FileNotFoundError(f'--label_map={label_map!r} does not exist.')
  config = configs.load_saved(workdir)
  clip = eval_transform(read_video(video, fps), config.dataset)
  config, model, params, step = load_run(workdir, step, config)
  check_fits(model, params, clip, workdir)
  check_finite(params, workdir, step)
  probs = probabilities(model, params, clip)
  names = label_names(config.dataset, len(probs), label_map)
  return Result(step, len(probs), top_k(probs, k, names))


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_string('workdir', None, 'The trained run\'s --workdir.', required=True)
  flags.DEFINE_string('video', None, 'One video file to classify (any format PyAV '
                      'decodes); the result is printed.')
  flags.DEFINE_string('videos', None, 'Many videos: a file, a folder (searched '
                      'recursively), a glob or a CSV of paths; needs --out.')
  flags.DEFINE_string('out', None, 'With --videos: the output file, .jsonl or .csv.')
  flags.DEFINE_integer('num_clips', 0, 'With --videos: clips per video; 0 = the run\'s '
                       'config.dataset.num_test_clips.', lower_bound=0)
  flags.DEFINE_integer('num_crops', 0, 'With --videos: crops per clip; 0 = the run\'s '
                       'config.dataset.num_test_crops.', lower_bound=0)
  flags.DEFINE_integer('batch_size', 8, 'With --videos: videos per device batch.',
                       lower_bound=1)
  flags.DEFINE_integer('workers', 4, 'With --videos: threads decoding videos.',
                       lower_bound=1)
  flags.DEFINE_bool('progress', True, 'With --videos: a progress bar on stderr (only '
                    'when stderr is a terminal); --noprogress turns it off.')
  flags.DEFINE_integer('step', -1, 'Checkpoint step; -1 = the latest.')
  flags.DEFINE_integer('top_k', 5, 'How many classes to print.', lower_bound=1)
  flags.DEFINE_float('fps', 0., 'Resample the video to this frame rate first (the '
                     'rate its dataset was converted at); 0 keeps the source rate.')
  flags.DEFINE_string('label_map', '', 'Class names, one per line; default: '
                      'the run\'s config.dataset.label_map or '
                      'base_dir/label_map.txt.')


def check_flags() -> None:
  if bool(FLAGS.video) == bool(FLAGS.videos):
    raise app.UsageError('Give one of --video (one video, printed) or --videos (many, '
                         'written to --out).')
  if FLAGS.videos and not FLAGS.out:
    raise app.UsageError('--videos needs --out=FILE.jsonl or --out=FILE.csv.')
  if FLAGS.video and FLAGS.out:
    raise app.UsageError('--out is for --videos; --video prints its result.')


def main_many() -> int:
  """--videos: every line written, then OK, or DATA_ERROR when a video failed."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter import batch_predict
  # pylint: enable=g-import-not-at-top
  opts = batch_predict.Options(
      step=FLAGS.step, k=FLAGS.top_k, fps=FLAGS.fps, label_map=FLAGS.label_map,
      num_clips=FLAGS.num_clips, num_crops=FLAGS.num_crops, batch_size=FLAGS.batch_size,
      workers=FLAGS.workers, progress=FLAGS.progress)
  with cli.usage_errors():
    counts = batch_predict.run(FLAGS.workdir, FLAGS.videos, FLAGS.out, opts)
  total = counts.scored + counts.failed
  if counts.failed:
    sys.stderr.write(f'{cli.program_name()}: error: {counts.failed} of {total} videos '
                     f'could not be read (their lines in {FLAGS.out} say why); the other '
                     f'{counts.scored} are scored.\n')
    return cli.DATA_ERROR
  logging.info('%d videos scored into %s in %.1f s (%.2f videos/s; start-up and checkpoint '
               'load excluded)', total, FLAGS.out, counts.seconds,
               total / max(counts.seconds, 1e-9))
  return cli.OK


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_flags()
  from data_pipelines import tf_runtime  # pylint: disable=g-import-not-at-top
  tf_runtime.configure()  # TensorFlow only resizes frames here
  cli.quiet_library_logs()
  if not FLAGS['verbosity'].present:  # the result only; --verbosity=0 for our INFO lines
    logging.set_verbosity(logging.WARNING)
  if FLAGS.videos:
    return main_many()
  with cli.usage_errors():  # a ValueError here is the user's input (an unreadable video)
    result = predict(FLAGS.workdir, FLAGS.video, FLAGS.step, FLAGS.top_k, FLAGS.fps,
                     FLAGS.label_map)
  print(f'{FLAGS.video}: top {len(result.top)} of {result.num_classes} classes '
        f'({FLAGS.workdir}, step {result.step})')
  for rank, p in enumerate(result.top, 1):
    print(f'{rank:2d}. {p.probability:.6f}  {p.label}')


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
