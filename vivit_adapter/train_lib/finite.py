"""Finite or refused: which tensors of a tree hold NaN or infinity.

A diverged run must never leave a checkpoint that looks good: the trainer checks the
state before each save (and a restore skips a non-finite checkpoint), and `predict`
refuses a non-finite model. One reduction per tensor, jitted, so that it runs where the
arrays live (sharded over devices or hosts) and only booleans come back.
"""

from typing import Any, List

import jax
import jax.numpy as jnp
import numpy as np


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


@jax.jit
def _leaf_finite(leaves):
  return [jnp.all(jnp.isfinite(x)) for x in leaves]


def nonfinite_names(tree: Any) -> List[str]:
  """Names ('params/Block_0/kernel') of the floating-point leaves with NaN or inf."""
  pairs = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
           if jnp.issubdtype(jnp.asarray(x).dtype if not hasattr(x, 'dtype') else x.dtype,
                             jnp.inexact)]
  if not pairs:
    return []
  flags = jax.device_get(_leaf_finite([x for _, x in pairs]))
  return [_path_name(p) for (p, _), ok in zip(pairs, flags) if not bool(np.asarray(ok))]


def describe(names: List[str]) -> str:
  """'3 tensors hold NaN or inf, e.g. a/kernel, b/bias' (at most three named)."""
  shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
  verb = 'tensors hold' if len(names) != 1 else 'tensor holds'
  return f'{len(names)} {verb} NaN or inf, e.g. {shown}'
