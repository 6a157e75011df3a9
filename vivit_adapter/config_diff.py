"""Comparing configs as their saved config.json has them: the file's name, flat dotted
views and differences. A leaf module (no project imports), so that the modules that own
a config's choices (checkpoints, models) can compare configs without importing
vivit_adapter.configs, which imports them."""

import json
from typing import Dict, Tuple

import ml_collections

CONFIG_FILE = 'config.json'


def flat_dict(tree, prefix: str = '') -> Dict[str, object]:
  """A nested dict (or ConfigDict) as {'a.b.c': leaf}, leaves as JSON has them (tuples
  become lists), so a config compares equal to the config.json it was saved as."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  out = {}
  for key, value in json.loads(json.dumps(tree, default=str)).items():
    if isinstance(value, dict):
      out.update(flat_dict(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differences(old, new) -> Dict[str, Tuple[object, object]]:
  """{dotted key: (old value, new value)} for the keys both configs have that differ.

  A key added to (or removed from) this file since `old` was saved is not a difference:
  a new key's default keeps the old behaviour.
  """
  a, b = flat_dict(old), flat_dict(new)
  return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}


def under(key: str, prefixes) -> bool:
  """Whether dotted `key` is one of `prefixes` or lies below one."""
  return any(key == p or key.startswith(p + '.') for p in prefixes)
