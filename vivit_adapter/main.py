r"""Trains and evaluates one experiment.

  python -m vivit_adapter.main --config=experiments/synthetic_stage1.py \
      [--workdir=runs/synthetic_stage1] [--config.key=value ...]

Without --workdir the run goes to runs/<config.experiment_name> (its first line says so).

Several processes (GPU hosts, or CPU processes in tests) add --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID); a multi-host Cloud TPU slice is detected from its environment.

Rerunning a command resumes its workdir. A workdir with checkpoints is only continued
by a config that can continue them (--allow_config_change admits changes that keep the
parameter shapes, e.g. more steps). Exit codes: data_pipelines.cli (docs/training.md);
SIGTERM/SIGINT saves a checkpoint and exits 75 (requeue).
"""

import os

from absl import app
from absl import flags

from data_pipelines import cli
from vivit_adapter import config_loading
from vivit_adapter import distributed

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  config_loading.define_config_flag()
  flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, summaries, '
                      'config.json. Default: runs/<config.experiment_name>.')
  flags.DEFINE_bool('allow_config_change', False, 'Resume a workdir whose config.json '
                    'differs from this config in keys that keep the parameter shapes '
                    '(e.g. more steps, another learning rate).')
  distributed.define_flags()


def default_workdir(config) -> str:
  """runs/<config.experiment_name>, for a run started without --workdir (said on stdout)."""
  if not config.experiment_name:
    raise cli.ConfigError('--workdir not given and config.experiment_name is empty: give '
                          '--workdir, or --config.experiment_name to run in runs/<name>.')
  workdir = os.path.join('runs', config.experiment_name)
  print(f'workdir not given: using {workdir}', flush=True)
  return workdir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  workdir = FLAGS.workdir or default_workdir(config)  # said before anything else
  # JAX, TensorFlow and the trainer are imported here, not above: --help and flag
  # errors answer without them.
  # pylint: disable=g-import-not-at-top
  import jax
  from data_pipelines import tf_runtime
  from vivit_adapter.train_lib import run_lock
  from vivit_adapter.train_lib import startup
  from vivit_adapter.train_lib import trainer
  # pylint: enable=g-import-not-at-top
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  cli.quiet_library_logs()
  # Before jax.distributed: a process that stops here must not leave the others
  # waiting for it at the coordinator. A ValueError here is the user's: one line.
  with cli.usage_errors():
    checked = startup.check(config, workdir, FLAGS.allow_config_change)
    distributed.initialize_from_flags()
    run_lock.acquire(workdir, jax.process_index())  # one run per workdir
    startup.check_after_join(config, jax.process_count())
  distributed.log_topology()
  summary = trainer.train_and_evaluate(config, workdir,
                                       allow_config_change=FLAGS.allow_config_change,
                                       checked=checked)
  if summary.get('preempted'):
    saved = ('after saving a checkpoint' if summary.get('saved', True) else
             'with nothing new to checkpoint')
    raise cli.Preempted(f'stopped by {summary["preempted"]} at step {summary["step"]} '
                        f'{saved}; rerun the same command to resume.')


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=config_loading.flags_parser)
