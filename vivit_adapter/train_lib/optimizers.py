"""Optimizer, learning-rate schedule and the trainable/frozen split of the parameters.

Frozen parameters get `optax.set_to_zero()` through `optax.multi_transform`: they have
no optimizer state (no momentum or Adam moments) and are never updated. The train
step also never computes their gradient (see steps.py): an optimizer mask alone would
still pay for the backward pass, which is the cost this project exists to avoid.
"""

import math
from typing import Callable, Dict, Tuple

import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from vivit_adapter.models import names

OPTIMIZERS = ('momentum', 'adamw', 'sgd')  # config.optimizer
SCHEDULES = ('cosine', 'linear', 'constant')  # config.lr_configs.schedule, after warm-up
# Top-level parameter names that `config.model.freeze_spatial` freezes: the tubelet
# embedding and the spatial encoder (with its CLS token).
SPATIAL_KEYS = names.SPATIAL_GROUP
TRAINABLE, FROZEN = 'trainable', 'frozen'


def frozen_keys(params: Dict, freeze_spatial: bool,
                trainable_spatial_layers: int = 0) -> Tuple[str, ...]:
  """The parameter subtrees that stay fixed during training, as '/'-joined paths.

  A top-level name ('embedding', 'SpatialTransformer', ...) freezes all of it. With the
  spatial dial (`trainable_spatial_layers` = k > 0, docs/design.md §2d) the spatial
  encoder is split: its position embedding and blocks [0, L-k) are frozen
  ('SpatialTransformer/encoderblock_0', ...), its top k blocks and norm train.
  """
  if not freeze_spatial:
    return ()
  out = []
  for key in (k for k in params if k in SPATIAL_KEYS):
    if key != names.SPATIAL or not trainable_spatial_layers:
      out.append(key)
      continue
    dial = len([n for n in params[key] if n.startswith(names.BLOCK_PREFIX)]) - (
        trainable_spatial_layers)
    below = (names.POSEMB_MODULE,) + tuple(names.encoder_block(i) for i in range(dial))
    out += [f'{key}/{n}' for n in params[key] if n in below]
  return tuple(out)


def is_frozen(path: Tuple[str, ...], frozen: Tuple[str, ...]) -> bool:
  """Whether the parameter at `path` (a tuple of names) lies in a frozen subtree."""
  return any(tuple(f.split('/')) == path[:f.count('/') + 1] for f in frozen)


def _label_tree(params: Dict, frozen: Tuple[str, ...], fn) -> Dict:
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: fn(path, leaf, is_frozen(path, frozen)) for path, leaf in flat.items()})


def param_labels(params: Dict, frozen: Tuple[str, ...]) -> Dict:
  """A tree like `params` with TRAINABLE / FROZEN at every leaf."""
  return _label_tree(params, frozen, lambda _, __, f: FROZEN if f else TRAINABLE)


def split_params(params: Dict, frozen: Tuple[str, ...]) -> Tuple[Dict, Dict]:
  """(trainable, fixed): the parameters outside and inside the frozen subtrees, each a
  tree of the same names as `params` (a split module appears in both)."""
  flat = traverse_util.flatten_dict(params)
  parts = ({}, {})
  for path, leaf in flat.items():
    parts[is_frozen(path, frozen)][path] = leaf
  return tuple(traverse_util.unflatten_dict(p) for p in parts)


def merge_params(*trees: Dict) -> Dict:
  """The union of disjoint parameter trees (the inverse of `split_params`)."""
  flat = {}
  for tree in trees:
    flat.update(traverse_util.flatten_dict(tree))
  return traverse_util.unflatten_dict(flat)


def count_params(params: Dict, frozen: Tuple[str, ...]) -> Dict[str, int]:
  """{'trainable': n, 'frozen': m} parameter counts."""
  counts = {TRAINABLE: 0, FROZEN: 0}
  for path, leaf in traverse_util.flatten_dict(params).items():
    counts[FROZEN if is_frozen(path, frozen) else TRAINABLE] += math.prod(leaf.shape)
  return counts


def decay_mask(params: Dict) -> Dict:
  """Weight decay applies to weight matrices only, not to norms, biases, CLS or posembs."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: path[-1] == 'kernel' and leaf.ndim >= 2 for path, leaf in flat.items()})


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key when the optimizer or schedule is not one of ours.

  The check of these two keys, run by the start-up check (train_lib.startup). The
  builders below match every name and fail the same way on any other, so an unchecked
  config can never fall through to another optimizer or schedule.
  """
  for key, value, allowed in (('optimizer', config.optimizer, OPTIMIZERS),
                              ('lr_configs.schedule', config.lr_configs.schedule, SCHEDULES)):
    if value not in allowed:
      raise _unknown(key, value, allowed)


def _unknown(key: str, value: str, allowed: Tuple[str, ...]) -> ValueError:
  return ValueError(f'config.{key}={value!r}; expected one of {allowed}.')


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> Callable[[int], jnp.ndarray]:
  """Linear warm-up, then cosine / linear decay or a constant rate."""
  lr = config.lr_configs
  warmup = (lr.warmup_steps if lr.warmup_steps >= 0
            else int(round(lr.warmup_epochs * steps_per_epoch)))
  warmup = min(warmup, max(total_steps - 1, 0))
  base, end = lr.base_learning_rate, lr.base_learning_rate * lr.end_factor
  decay_steps = max(total_steps - warmup, 1)
  if lr.schedule == 'cosine':
    after = optax.cosine_decay_schedule(base, decay_steps, alpha=lr.end_factor)
  elif lr.schedule == 'linear':
    after = optax.linear_schedule(base, end, decay_steps)
  elif lr.schedule == 'constant':
    after = optax.constant_schedule(base)
  else:
    raise _unknown('lr_configs.schedule', lr.schedule, SCHEDULES)
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), after], boundaries=[warmup])


def _base_optimizer(config, schedule, params) -> optax.GradientTransformation:
  oc = config.optimizer_configs
  mask = decay_mask(params)
  if config.optimizer == 'adamw':
    return optax.adamw(schedule, b1=oc.beta1, b2=oc.beta2, eps=oc.epsilon,
                       weight_decay=oc.weight_decay, mask=mask)
  if config.optimizer not in ('momentum', 'sgd'):
    raise _unknown('optimizer', config.optimizer, OPTIMIZERS)
  parts = []
  if config.optimizer == 'momentum':
    parts.append(optax.trace(decay=oc.momentum, nesterov=oc.nesterov))
  if oc.weight_decay:
    # Decoupled: the decay is added after momentum, scaled by the learning rate.
    parts.append(optax.add_decayed_weights(oc.weight_decay, mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)


def make_optimizer(config: ml_collections.ConfigDict, params: Dict,
                   frozen: Tuple[str, ...], steps_per_epoch: int, total_steps: int):
  """Returns (tx, schedule) for the whole parameter tree."""
  schedule = make_schedule(config, steps_per_epoch, total_steps)
  inner = _base_optimizer(config, schedule, params)
  if config.max_grad_norm:
    inner = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), inner)
  tx = optax.multi_transform({TRAINABLE: inner, FROZEN: optax.set_to_zero()},
                             param_labels(params, frozen))
  return tx, schedule
