r"""Trains and evaluates one experiment.

  python -m vivit_adapter.main --config=experiments/synthetic_stage1.py \
      --workdir=runs/synthetic_stage1 [--config.key=value ...]

Several processes (GPU hosts, or CPU processes in tests) add --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID); a multi-host Cloud TPU slice is detected from its environment.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

# Importing the reader hides the GPUs from TensorFlow (input only) before TF starts.
from data_pipelines import reader
from vivit_adapter import config_loading
from vivit_adapter import configs
from vivit_adapter import distributed
from vivit_adapter.train_lib import trainer

_CONFIG = config_loading.define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, summaries, '
                               'config.json.', required=True)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS', ''),
    "Process 0's host:port, for a run over several processes.")
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', int(os.environ.get('JAX_NUM_PROCESSES', '0')), 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', int(os.environ.get('JAX_PROCESS_ID', '-1')), "This process's index.")


def check_start_up(config) -> None:
  """Fails before any compilation on a bad value, missing data or a missing init path."""
  configs.validate(config)
  reader.make_source(config.dataset, 'train')  # FileNotFoundError says how to make data
  path = config.init_from.checkpoint_path
  if path and not os.path.exists(path):
    hint = (' Train stage 1 first (its --workdir) or' if config.stage == 'stage2' else '')
    raise FileNotFoundError(f'config.init_from.checkpoint_path={path!r} does not exist.'
                            f'{hint} set --config.init_from.checkpoint_path.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  distributed.log_topology()
  config = _CONFIG.value
  try:
    check_start_up(config)
  except (ValueError, FileNotFoundError) as e:
    # A user error, not a bug: one clear line, no traceback.
    sys.exit(f'vivit_adapter.main: error: {type(e).__name__}: {e}')
  trainer.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser)
