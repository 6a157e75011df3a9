"""Restoring the parameters of this project's own runs (orbax, `<workdir>/checkpoints`).

The trainer saves each step as an orbax Composite with items 'params', 'state' and
'meta'. Initialising another run needs only 'params', so only that item is read, as
host numpy arrays: the caller merges and places them with the new run's shardings.
Paths are local or gs:// URLs (see `orbax_directory`).
"""

import contextlib
import os
from typing import Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from data_pipelines import cli
from data_pipelines import fs
from vivit_adapter.checkpoints import merge

ITEM_NAMES = ('params', 'state', 'meta')


def orbax_directory(path: str) -> str:
  """`path` as orbax takes it: a local path made absolute, or a gs:// URL unchanged.

  Every directory this project hands to orbax goes through here. orbax stores arrays
  through TensorStore, which reaches local files and gs:// only (and it takes any other
  string for a local path): another scheme fails now, naming the path, not at a save.
  """
  path = fs.abspath(path)
  if fs.is_url(path) and not path.startswith('gs://'):
    raise ValueError(f'{path}: orbax checkpoints can live on local paths or gs:// only; '
                     'put the workdir (or init checkpoint) there.')
  return path


def resolve_checkpoint_dir(path: str, step: int = -1) -> Tuple[str, int]:
  """(the CheckpointManager directory, the requested step) for `path`.

  `path` may be a workdir (with `checkpoints/`), its `checkpoints/` directory, or one
  `checkpoints/<step>` directory, whose step then wins over `step` = -1.
  """
  path = fs.abspath(path).rstrip('/')
  if not fs.isdir(path):
    what = 'is a file, not a run directory' if fs.exists(path) else 'does not exist'
    raise FileNotFoundError(f'Checkpoint directory {path} {what}.')
  if fs.isdir(os.path.join(path, 'checkpoints')):
    return os.path.join(path, 'checkpoints'), step
  name = os.path.basename(path)
  if name.isdigit() and fs.isdir(os.path.join(path, 'params')):
    if step not in (-1, int(name)):
      raise ValueError(f'{path} is the checkpoint of step {name}, but step={step} was asked; '
                       'give the checkpoints/ directory or step=-1.')
    return os.path.dirname(path), int(name)
  return path, step


def _manager(directory: str) -> ocp.CheckpointManager:
  # Handlers for every item, so orbax can read metadata and does not warn about
  # items it found but could not interpret.
  return ocp.CheckpointManager(orbax_directory(directory), item_handlers={
      'params': ocp.PyTreeCheckpointHandler(), 'state': ocp.PyTreeCheckpointHandler(),
      'meta': ocp.JsonCheckpointHandler()})


def find_checkpoint_step(path: str, step: int = -1) -> Tuple[str, int]:
  """(the CheckpointManager directory, the step to restore) for `path` and `step`.

  Raises:
    FileNotFoundError: no checkpoint at all or not the requested step (names the
      directory searched and the steps found).
  """
  directory, step = resolve_checkpoint_dir(path, step)
  with _manager(directory) as mngr:
    steps = sorted(mngr.all_steps())
  if not steps:
    raise FileNotFoundError(f'No orbax checkpoint found in {directory} (searched for '
                            f'<step>/ directories there, starting from {path}).')
  step = steps[-1] if step == -1 else step
  if step not in steps:
    raise FileNotFoundError(f'No checkpoint of step {step} in {directory}; it has '
                            f'steps {steps}.')
  return directory, step


def restore_workdir_params(path: str, step: int = -1) -> dict:
  """Restores the 'params' item of a run's checkpoint as numpy arrays.

  Args:
    path: the run's workdir, its `checkpoints/` directory, or `checkpoints/<step>`.
    step: the step to restore; -1 means the latest.

  Returns:
    The parameters as a nested dict of np.ndarray.

  Raises:
    FileNotFoundError: see `find_checkpoint_step`, or a step without 'params'.
  """
  directory, step = find_checkpoint_step(path, step)
  with _manager(directory) as mngr:
    with _damage_is_data_error(directory, step):
      metadata = mngr.item_metadata(step)['params']
    if metadata is None:
      raise FileNotFoundError(f"Checkpoint {directory}/{step} has no 'params' item.")
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                metadata.tree)
    with _damage_is_data_error(directory, step):
      restored = mngr.restore(step, args=ocp.args.Composite(
          params=ocp.args.PyTreeRestore(restore_args=restore_args)))
  return dict(restored['params'])


@contextlib.contextmanager
def _damage_is_data_error(directory: str, step: int):
  """A checkpoint whose files cannot be read (truncated, half copied) is the data's
  fault, not a bug: one line naming it (cli.DataError), for stage 2's init and predict."""
  try:
    yield
  except (FileNotFoundError, cli.UserError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    if cli.exit_code(e) is not None:  # a full or forbidden disk keeps its own code
      raise
    first = cli.message(e).splitlines()[0][:200]
    raise cli.DataError(
        f'Checkpoint {directory}/{step} cannot be read ({type(e).__name__}: {first}): it is '
        'damaged or incomplete (an interrupted copy?). Copy it again, or use another step '
        '(--step, config.init_from.step).') from e


def param_shapes(path: str, step: int = -1) -> dict:
  """{flat name: shape} of a run's checkpointed parameters, from orbax's metadata (no
  array is read): what a mismatch message compares with the model."""
  directory, step = find_checkpoint_step(path, step)
  with _manager(directory) as mngr:
    metadata = mngr.item_metadata(step)['params']
  return {k: tuple(v.shape) for k, v in merge.flatten(metadata.tree).items()}
