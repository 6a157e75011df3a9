r"""Trains and evaluates one experiment.

  python -m vivit_adapter.main --config=experiments/synthetic_stage1.py \
      --workdir=runs/synthetic_stage1 [--config.key=value ...]

Several processes (GPU hosts, or CPU processes in tests) add --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID); a multi-host Cloud TPU slice is detected from its environment.

Rerunning a command resumes its workdir. A workdir with checkpoints is only continued
by a config that can continue them (--allow_config_change admits changes that keep the
parameter shapes, e.g. more steps). Exit codes: data_pipelines.cli (README "Exit codes");
SIGTERM/SIGINT saves a checkpoint and exits 75 (requeue).
"""

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
                      'config.json.', required=True)
  flags.DEFINE_bool('allow_config_change', False, 'Resume a workdir whose config.json '
                    'differs from this config in keys that keep the parameter shapes '
                    '(e.g. more steps, another learning rate).')
  distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # JAX, TensorFlow and the trainer are imported here, not above: --help and flag
  # errors answer without them.
  # pylint: disable=g-import-not-at-top
  import jax
  from data_pipelines import tf_runtime
  from vivit_adapter import preflight
  from vivit_adapter.train_lib import run_lock
  from vivit_adapter.train_lib import trainer
  from vivit_adapter.train_lib import workdir_guard
  # pylint: enable=g-import-not-at-top
  config, workdir = FLAGS.config, FLAGS.workdir
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  cli.quiet_library_logs()
  # Before jax.distributed: a process that stops here must not leave the others
  # waiting for it at the coordinator. A ValueError here is the user's: one line.
  with cli.usage_errors():
    workdir_guard.check_workdir(config, workdir, FLAGS.allow_config_change)
    preflight.check_run_inputs(config)
    workdir_guard.probe_writable(workdir)
    preflight.check_data_against_files(config)
    distributed.initialize_from_flags()
    run_lock.acquire(workdir, jax.process_index())  # one run per workdir
    preflight.check_shards_per_host(config, jax.process_count())
    preflight.check_batch_sizes(config)
  distributed.log_topology()
  summary = trainer.train_and_evaluate(config, workdir,
                                       allow_config_change=FLAGS.allow_config_change)
  if summary.get('preempted'):
    saved = ('after saving a checkpoint' if summary.get('saved', True) else
             'with nothing new to checkpoint')
    raise cli.Preempted(f'stopped by {summary["preempted"]} at step {summary["step"]} '
                        f'{saved}; rerun the same command to resume.')


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=config_loading.flags_parser)
