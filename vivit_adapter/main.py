r"""Trains and evaluates one experiment.

  python -m vivit_adapter.main --config=experiments/synthetic_stage1.py \
      --workdir=runs/synthetic_stage1 [--config.key=value ...]

Several processes (GPU hosts, or CPU processes in tests) add --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID); a multi-host Cloud TPU slice is detected from its environment.
"""

import sys

from absl import app
from absl import flags
import jax

from data_pipelines import tf_runtime
from vivit_adapter import config_loading
from vivit_adapter import distributed
from vivit_adapter import preflight
from vivit_adapter.train_lib import trainer


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  config_loading.define_config_flag()
  flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, summaries, '
                      'config.json.', required=True)
  distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  try:
    # Before jax.distributed: a process that stops here must not leave the others
    # waiting for it at the coordinator.
    preflight.check_run_inputs(config)
    distributed.initialize_from_flags()
    preflight.check_shards_per_host(config, jax.process_count())
  except (ValueError, FileNotFoundError) as e:
    # A user error, not a bug: one clear line, no traceback.
    sys.exit(f'vivit_adapter.main: error: {type(e).__name__}: {e}')
  distributed.log_topology()
  trainer.train_and_evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=config_loading.flags_parser)
