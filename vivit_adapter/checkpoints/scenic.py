"""Scenic ViViT checkpoints (flax-serialised TrainStates) -> a parameter tree.

Scenic's factorised-encoder tree has exactly this project's names, so the result merges
into our model unchanged. Scenic saved with `flax.training.checkpoints`: one msgpack file
`checkpoint_<step>` per step (newer flax writes an orbax directory of that name instead),
holding a TrainState whose parameters sit under `params`, under `optimizer/target` (the
old `flax.optim` optimizer), or which is the bare parameter tree itself.
"""

import os
import re
from typing import Any, Mapping, Union

import flax
import jax
import numpy as np

from data_pipelines import fs
from vivit_adapter.checkpoints import workdir
from vivit_adapter.models import names

_STEP_NAME = re.compile(r'checkpoint_(\d+)')
# Top-level names that only a parameter tree (not a TrainState) has.
_PARAM_ROOTS = (names.EMBEDDING, names.SPATIAL, names.TEMPORAL, names.HEAD)


def latest_checkpoint_file(directory: str) -> str:
  """The `checkpoint_<step>` entry with the highest step in `directory`."""
  steps = {}
  for name in fs.listdir(directory):
    match = _STEP_NAME.fullmatch(name)
    if match:
      steps[int(match.group(1))] = os.path.join(directory, name)
  if not steps:
    raise FileNotFoundError(
        f'No flax checkpoint (checkpoint_<step>) in directory {directory}; '
        f'it holds {sorted(fs.listdir(directory))[:10]}.')
  return steps[max(steps)]


def read_flax_checkpoint(path: str) -> Any:
  """The state dict stored at `path`: a msgpack file, or an orbax directory."""
  if fs.isdir(path):
    import orbax.checkpoint as ocp  # Only newer-flax checkpoints need it.
    with ocp.PyTreeCheckpointer() as ckptr:
      return ckptr.restore(workdir.orbax_directory(path))
  with fs.open(path, 'rb') as f:
    data = f.read()
  try:
    return flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types.
    raise ValueError(f'{path} is not a flax msgpack checkpoint ({type(e).__name__}: {e}).'
                     ) from e


def params_from_state(state: Mapping, source_name: str) -> dict:
  """The parameter tree inside a restored scenic TrainState (or the tree itself)."""
  optimizer = state.get('optimizer')
  if isinstance(optimizer, Mapping) and 'target' in optimizer:
    params = optimizer['target']  # flax.optim era: optimizer.target.
  elif 'params' in state:
    params = state['params']
  else:
    params = state
  if not isinstance(params, Mapping):
    raise ValueError(f'{source_name}: the parameters are a {type(params).__name__}, '
                     'not a tree of arrays.')
  if set(params) == {'params'}:
    params = params['params']  # A variables dict {'params': ...}.
  if not any(root in params for root in _PARAM_ROOTS):
    raise ValueError(
        f'{source_name}: no ViViT parameters found; top-level keys are '
        f'{sorted(state)}; expected params, optimizer/target or {_PARAM_ROOTS}.')
  return jax.tree.map(np.asarray, flax.core.unfreeze(params))


def load_scenic_checkpoint(path_or_tree: Union[str, os.PathLike, Mapping]) -> dict:
  """The ViViT-FE parameter tree of a scenic checkpoint.

  Args:
    path_or_tree: a `checkpoint_<step>` file or directory, a directory of those (the
      highest step is read), or an already restored state dict.

  Returns:
    The nested parameter dict, leaves as numpy arrays.
  """
  if isinstance(path_or_tree, Mapping):
    return params_from_state(path_or_tree, 'the given state')
  path = os.fspath(path_or_tree)
  if not fs.exists(path):
    raise FileNotFoundError(f'Scenic checkpoint {path} does not exist.')
  if fs.isdir(path) and not _STEP_NAME.fullmatch(os.path.basename(path.rstrip('/'))):
    path = latest_checkpoint_file(path)
  return params_from_state(read_flax_checkpoint(path), path)
