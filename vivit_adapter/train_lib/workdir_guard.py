"""A run's start never damages its workdir.

`check_workdir` runs before anything is written, first in the start-up check
(train_lib.startup.check: by `vivit_adapter.main` before the processes join, by
`train_and_evaluate` for in-process callers that did not run it): a workdir that
holds checkpoints is only resumed by a config that can continue them. A change to a key
that shapes the parameters or the optimizer state (configs.STATE_SHAPE_KEYS) is refused
in one line naming each key and both values; a change to anything else that alters the
run (steps, learning rate, augmentation, seed) needs --allow_config_change; bookkeeping
keys (configs.BOOKKEEPING_KEYS: logging cadence, where the same data lives) may change
freely. The trainer writes config.json only once the start (restore or init) worked, so a
refused or failed start leaves the workdir as it was.
"""

import errno
import json
import os
from typing import Dict, List, Optional, Tuple

from absl import logging
import ml_collections

from data_pipelines import cli
from data_pipelines import fs
from vivit_adapter import configs

_PROBE = '.write_probe'


def checkpoint_steps(workdir: str) -> List[int]:
  """The finished orbax steps in WORKDIR/checkpoints (temporary directories excluded)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not fs.isdir(directory):
    return []
  return sorted(int(name) for name in fs.listdir(directory) if name.isdigit())


def saved_config(workdir: str) -> Optional[dict]:
  """The workdir's config.json as a plain dict (None without one)."""
  path = os.path.join(workdir, configs.CONFIG_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise cli.ConfigError(f'{path} is not valid JSON ({e}); restore it from a copy, or '
                            'use a new --workdir.') from e


def _listed(changes: Dict[str, Tuple[object, object]]) -> str:
  return '; '.join(f'{key}: {old!r} in config.json, {new!r} now'
                   for key, (old, new) in changes.items())


def refusal(config: ml_collections.ConfigDict, saved: dict, workdir: str,
            allow_config_change: bool) -> Optional[str]:
  """Why `config` may not resume the checkpoints of `saved` (one line), or None.

  Changed keys that are allowed are logged as a warning.
  """
  changes = configs.differences(saved, config)
  shape = {k: v for k, v in changes.items() if configs.under(k, configs.STATE_SHAPE_KEYS)}
  if shape:
    return (f'--workdir={workdir} holds checkpoints of another model; this config changes '
            f'what they were trained with: {_listed(shape)}. Use a new --workdir for this '
            'config; the checkpoints there are untouched.')
  run = {k: v for k, v in changes.items()
         if not configs.under(k, configs.BOOKKEEPING_KEYS)}
  if run and not allow_config_change:
    return (f'--workdir={workdir} holds checkpoints of a run with other settings: '
            f'{_listed(run)}. Pass --allow_config_change to continue it with the new '
            'values, or use a new --workdir.')
  if changes:
    logging.warning('Resuming %s with changed settings: %s', workdir, _listed(changes))
  return None


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  allow_config_change: bool = False) -> None:
  """Refuses, before anything is written, a workdir this config must not start in.

  Raises:
    cli.ConfigError: the workdir is a file, or holds checkpoints this config cannot
      (or, without allow_config_change, may not) continue.
  """
  if fs.exists(workdir) and not fs.isdir(workdir):
    raise cli.ConfigError(f'--workdir={workdir} is a file, not a directory; give a '
                          'directory (it is created if missing).')
  saved = saved_config(workdir)
  if saved is None or not checkpoint_steps(workdir):
    return  # nothing trained here yet: nothing to protect
  problem = refusal(config, saved, workdir, allow_config_change)
  if problem:
    raise cli.ConfigError(problem)


def probe_writable(workdir: str) -> None:
  """Creates the workdir and writes (then deletes) a file there, so that a read-only or
  full file system fails now, naming the workdir, and not at the first checkpoint.

  Raises:
    OSError: the workdir cannot be written (the programs exit with cli.IO_ERROR).
  """
  probe = os.path.join(workdir, f'{_PROBE}.{os.getpid()}')
  try:
    fs.makedirs(workdir)
    with fs.open(probe, 'w') as f:
      f.write('probe')
    fs.remove(probe)
  except Exception as e:  # OSError, or tf.io.gfile's PermissionDeniedError and kin
    if cli.exit_code(e) is None:
      raise
    code = getattr(e, 'errno', None) or errno.EACCES
    raise OSError(code, f'cannot write to --workdir ({cli.message(e)})', workdir) from e
