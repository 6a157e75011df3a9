"""The experiment files of `experiments/`, found as modules of the `experiments` package.

Studies name an experiment (`'synthetic_stage1'`), not a path: the import system finds
the file wherever the project is installed (a checkout, site-packages), and the config
is then loaded, overrides included, by `config_loading.load_config`, exactly as
`--config=experiments/NAME.py` loads it on the command line.
"""

import importlib
from typing import Sequence

import ml_collections

from vivit_adapter import config_loading


def path(name: str) -> str:
  """The file of experiment `name` (e.g. 'synthetic_stage1')."""
  try:
    module = importlib.import_module(f'experiments.{name}')
  except ModuleNotFoundError as e:
    if e.name not in ('experiments', f'experiments.{name}'):
      raise  # the experiment file exists but imports something missing
    raise FileNotFoundError(
        f'No experiment {name!r}: experiments/{name}.py is not importable as '
        f'experiments.{name} ({e}). Run from the repository root, or install the '
        'project (pip install -e .), so that the experiments package is found.') from e
  return module.__file__


def load(name: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Experiment `name`'s locked config with 'key=value' overrides applied in order."""
  return config_loading.load_config(path(name), overrides)
