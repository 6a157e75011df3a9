r"""`make demo`: the two-stage route and the tuned baseline on the synthetic dataset, timed
to the same accuracy: one table, one picture.

  python -m vivit_adapter.demo --workdir=runs/demo [--quick]

The program: flags, then `vivit_adapter.studies.demo.run_demo`, whose docstring says
what the demo generates, runs and writes.
"""

from typing import List

from absl import app
from absl import flags
from absl import logging

from data_pipelines import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_string('workdir', 'runs/demo', 'Where the data, the image checkpoint, '
                      'the runs and the results go; reused by a second call.')
  flags.DEFINE_bool('quick', False, 'A tiny version (seconds per run), to test '
                    'the path end to end; its numbers mean nothing.')


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # TensorFlow and JAX load here, not with the module: --help answers without them.
  # pylint: disable=g-import-not-at-top
  from data_pipelines import tf_runtime
  from vivit_adapter.studies import demo
  # pylint: enable=g-import-not-at-top
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  cli.quiet_library_logs()
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.INFO)
  # A ValueError here is a finished run of another config, or a bad flag: one line.
  # A stopped run raises cli.Preempted: exit 75, rerun to continue.
  with cli.usage_errors():
    demo.run_demo(FLAGS.workdir, demo.QUICK if FLAGS.quick else demo.FULL)


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
