r"""`make demo`: the synthetic dataset, stage 1 -> stage 2 and the baseline, one table.

  python -m vivit_adapter.demo --workdir=runs/demo [--quick]

The program: flags, then `vivit_adapter.studies.demo.run_demo`, whose docstring says
what the demo generates, runs and writes.
"""

import sys
from typing import List

from absl import app
from absl import flags
from absl import logging

from data_pipelines import tf_runtime
from vivit_adapter.studies import demo
from vivit_adapter.train_lib import trainer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_string('workdir', 'runs/demo', 'Where the data and the three '
                      'runs go; reused by a second call.')
  flags.DEFINE_bool('quick', False, 'A tiny version (seconds per run), to test '
                    'the path end to end; its numbers mean nothing.')


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  trainer.quiet_third_party_logs()
  logging.set_verbosity(logging.INFO)
  try:
    demo.run_demo(FLAGS.workdir, demo.QUICK if FLAGS.quick else demo.FULL)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'vivit_adapter.demo: error: {type(e).__name__}: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
