"""orbax checkpoints of the training state in WORKDIR/checkpoints.

Each step has three items: 'params' (the model's parameter tree, what a stage-2 run
or `predict` reads), 'state' (optimizer state, step, rng) and 'meta' (JSON: step and
every process's input-pipeline position, so a resumed run sees the same batches).
orbax writes a step into a temporary directory and renames it when complete, so a
killed save never looks like a checkpoint; a damaged one is skipped on restore, with a
warning, for the one before it (config.max_to_keep >= 2 keeps one). A checkpoint of
another model is not damage: it stops the run with a CheckpointMismatchError.
"""

import contextlib
import errno
import os
import signal
from typing import Any, Dict, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from data_pipelines import cli
from vivit_adapter.checkpoints import merge
from vivit_adapter.checkpoints import workdir as run_checkpoints
from vivit_adapter.train_lib import finite

ITEMS = ('params', 'state', 'meta')
# What TensorStore and etils put in the text of a failed write -> the errno it stands for,
# so that a full or read-only disk exits cli.IO_ERROR naming the directory, not as a bug.
_STORAGE_ERRORS = {'No space left on device': errno.ENOSPC,
                   'Disk quota exceeded': errno.EDQUOT,
                   'Read-only file system': errno.EROFS,
                   'Permission denied': errno.EACCES}


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints, absolute, or a gs:// URL (orbax writes there directly)."""
  return run_checkpoints.orbax_directory(os.path.join(workdir, 'checkpoints'))


def make_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  # create=False: the directory appears with the first save, so a start that fails
  # (a mismatched init checkpoint) leaves no empty checkpoints/ behind.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False))


@contextlib.contextmanager
def storage_errors(directory):
  """A failed checkpoint write whose cause is the disk becomes an OSError with its errno.

  orbax writes into a temporary directory and renames it when complete, so the step
  being written is discarded whole and the earlier checkpoints stay intact.
  """
  try:
    yield
  except OSError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    for marker, code in _STORAGE_ERRORS.items():
      if marker in str(e):
        raise OSError(code, f'{marker} while writing a checkpoint', str(directory)) from e
    raise


def save(manager: ocp.CheckpointManager, state, meta: Dict[str, Any]) -> int:
  step = int(jax.device_get(state.step))
  with storage_errors(manager.directory):
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        state=ocp.args.StandardSave({'opt_state': state.opt_state, 'step': state.step,
                                     'rng': state.rng}),
        meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)
  return step


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """The last asynchronous save has completed (its errors, as `save`'s, surface here)."""
  with storage_errors(manager.directory):
    manager.wait_until_finished()


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_latest(manager: ocp.CheckpointManager, state) -> Optional[Tuple[Any, Dict, int]]:
  """Restores the newest readable checkpoint into `state`'s structure and shardings.

  Returns (state, meta, step), or None when there is no checkpoint. A checkpoint that
  fails to restore (partial or corrupt files) is reported and the one before it used.

  Raises:
    cli.CheckpointMismatchError: the checkpoints hold parameters of other shapes (the
      workdir belongs to another model config): a summary line, then the tensors.
    cli.DataError: no checkpoint could be restored.
  """
  steps: List[int] = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(state.params)),
          state=ocp.args.StandardRestore(_abstract(
              {'opt_state': state.opt_state, 'step': state.step, 'rng': state.rng})),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      _raise_if_other_model(manager, step, state.params)
      logging.warning('Checkpoint step %d in %s is damaged and was skipped (%s: %s); '
                      'restoring the one before it.', step, manager.directory,
                      type(e).__name__, cli.message(e).splitlines()[0][:300])
      continue
    inner = restored['state']
    bad = finite.nonfinite_names({'params': restored['params'],
                                  'opt_state': inner['opt_state']})
    if bad:  # written before saves were checked: never resume from it
      logging.warning('Checkpoint step %d in %s is not finite (%s) and was skipped; '
                      'restoring the one before it.', step, manager.directory,
                      finite.describe(bad))
      continue
    new_state = state.replace(params=restored['params'], opt_state=inner['opt_state'],
                              step=inner['step'], rng=inner['rng'])
    return new_state, dict(restored['meta']), step
  if steps:
    raise cli.DataError(
        f'None of the checkpoints {steps} in {manager.directory} could be restored (each '
        'reason is logged above). Rerun with the config the run was started with '
        '(config.json beside them); do not delete them before that has failed too.')
  return None


def _raise_if_other_model(manager, step: int, params) -> None:
  """A restore that failed because the checkpoint holds another model's shapes."""
  try:
    saved = run_checkpoints.param_shapes(str(manager.directory), step)
  except Exception:  # pylint: disable=broad-except
    return  # unreadable metadata: damage, not another model
  model = {k: tuple(v.shape) for k, v in merge.flatten(params).items()}
  missing = [k for k in model if k not in saved]
  unexpected = [k for k in saved if k not in model]
  mismatched = [k for k in model if k in saved and saved[k] != model[k]]
  if missing or unexpected or mismatched:
    raise cli.CheckpointMismatchError(merge.mismatch_message(
        f'{manager.directory}/{step}', model, saved, missing, unexpected, mismatched)
        .replace('Check that config.model', 'This workdir belongs to another config '
                 '(its config.json): run that config, or use a new --workdir. Check that '
                 'config.model', 1))


class PreemptionWatcher:
  """Turns SIGTERM (e.g. Cloud TPU preemption) or SIGINT (Ctrl-C) into a flag the loop
  checks each step: it saves a checkpoint and stops; the program then exits
  cli.PREEMPTED. Outside the loop the programs' own handlers apply (cli.start)."""
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = ''  # the signal's name once one arrived
    self._previous = {}

  def __enter__(self):
    for sig in self.SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. a notebook worker): no handler
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name
    cli.request_stop(self.requested)  # ends a wait on a blocked input pipeline too
    logging.warning('%s received: saving a checkpoint and stopping after this step.',
                    self.requested)

  def __exit__(self, *exc):
    cli.request_stop('')
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    return False
