"""orbax checkpoints of the training state in WORKDIR/checkpoints.

Each step has three items: 'params' (the model's parameter tree, what a stage-2 run
or `predict` reads), 'state' (optimizer state, step, rng) and 'meta' (JSON: step and
every process's input-pipeline position, so a resumed run sees the same batches).
orbax writes a step into a temporary directory and renames it when complete, so a
killed save never looks like a checkpoint; a damaged one is skipped on restore.
"""

import os
import signal
from typing import Any, Dict, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from vivit_adapter.checkpoints import workdir as run_checkpoints

ITEMS = ('params', 'state', 'meta')


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints, absolute, or a gs:// URL (orbax writes there directly)."""
  return run_checkpoints.orbax_directory(os.path.join(workdir, 'checkpoints'))


def make_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(manager: ocp.CheckpointManager, state, meta: Dict[str, Any]) -> int:
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      state=ocp.args.StandardSave({'opt_state': state.opt_state, 'step': state.step,
                                   'rng': state.rng}),
      meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)
  return step


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_latest(manager: ocp.CheckpointManager, state) -> Optional[Tuple[Any, Dict, int]]:
  """Restores the newest readable checkpoint into `state`'s structure and shardings.

  Returns (state, meta, step), or None when there is no checkpoint. A checkpoint that
  fails to restore (partial or corrupt files) is reported and the one before it used.
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
      logging.error('Checkpoint step %d in %s could not be restored (%s: %s); trying the '
                    'previous one.', step, manager.directory, type(e).__name__, e)
      continue
    inner = restored['state']
    new_state = state.replace(params=restored['params'], opt_state=inner['opt_state'],
                              step=inner['step'], rng=inner['rng'])
    return new_state, dict(restored['meta']), step
  if steps:
    raise RuntimeError(f'None of the checkpoints {steps} in {manager.directory} could be '
                       'restored; see the errors above. Move them away to start afresh.')
  return None


class PreemptionWatcher:
  """Turns SIGTERM (e.g. Cloud TPU preemption) into a flag the loop checks each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping after this step.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
