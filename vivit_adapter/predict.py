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

import sys

from absl import app
from absl import flags
from absl import logging

from data_pipelines import cli
# The library, under the names callers of this module have always used.
from vivit_adapter.inference import (  # pylint: disable=unused-import
    Prediction, Result, check_finite, check_fits, eval_transform, label_names, load_run,
    predict, probabilities, read_video, top_k)


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
