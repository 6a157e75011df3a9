"""The trainer's one entry point: `config.init_from` -> initial parameters + a log message.

Why one function: the run's log should say, in one place, exactly what came from which
checkpoint and what kept its fresh init, and every format should fail the same way
(names and shapes) before training starts rather than at the first step.
"""

import os
import re
from typing import Tuple

import ml_collections
import numpy as np

from vivit_adapter import models
from vivit_adapter.checkpoints import merge, scenic, stage2, vit_npz, workdir

FORMATS = ('auto', 'workdir', 'scenic', 'vit_npz')


def detect_format(path: str) -> str:
  """'workdir', 'scenic' or 'vit_npz' for an existing checkpoint path.

  A directory with orbax step directories (or `checkpoints/`) is a workdir; a
  directory of `checkpoint_<step>` entries, or one of those, is scenic/flax; a `.npz`
  file is an image ViT; any other file is taken as a flax msgpack checkpoint.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    entries = os.listdir(path)
    if ('checkpoints' in entries or any(e.isdigit() for e in entries)
        or (os.path.basename(path.rstrip('/')).isdigit() and 'params' in entries)):
      return 'workdir'
    if re.fullmatch(r'checkpoint_\d+', os.path.basename(path.rstrip('/'))) or any(
        re.fullmatch(r'checkpoint_\d+', e) for e in entries):
      return 'scenic'
    raise FileNotFoundError(
        f'config.init_from.checkpoint_path={path!r} is a directory without checkpoints: '
        'expected checkpoints/ or <step>/ (orbax) or checkpoint_<step> (flax) in it.')
  return 'vit_npz' if path.endswith('.npz') else 'scenic'


def _validate(init_cfg: ml_collections.ConfigDict) -> str:
  path = os.fspath(init_cfg.checkpoint_path)
  if init_cfg.checkpoint_format not in FORMATS:
    raise ValueError(f'config.init_from.checkpoint_format={init_cfg.checkpoint_format!r}; '
                     f'expected one of {FORMATS}.')
  if init_cfg.kernel_init_method not in vit_npz.KERNEL_INIT_METHODS:
    raise ValueError(f'config.init_from.kernel_init_method={init_cfg.kernel_init_method!r}; '
                     f'expected one of {vit_npz.KERNEL_INIT_METHODS}.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'config.init_from.checkpoint_path={path!r} does not exist.')
  return path


def _check_head(source_flat: dict, target_flat: dict, path: str) -> None:
  """A head for other classes is the common mistake; say how to fix it."""
  for name in ('output_projection/kernel', 'output_projection/bias'):
    if name in source_flat and name in target_flat:
      src, tgt = np.shape(source_flat[name]), np.shape(target_flat[name])
      if src[-1] != tgt[-1]:
        raise ValueError(
            f'Checkpoint {path}: {name} has {src[-1]} classes {src}, the model has '
            f'{tgt[-1]} {tgt}. To train a new head for this dataset, set '
            'config.init_from.restore_output_projection=False.')


def _video_source(fmt: str, path: str, step: int) -> Tuple[dict, str]:
  if fmt == 'workdir':
    directory, step = workdir.find_checkpoint_step(path, step)
    return workdir.restore_workdir_params(directory, step), f'{directory}/{step}'
  if step != -1 and os.path.isdir(path) and detect_format(path) == 'scenic':
    path = os.path.join(path, f'checkpoint_{step}')  # config.init_from.step applies here too.
  return scenic.load_scenic_checkpoint(path), path


def _groups(names) -> str:
  return ', '.join(sorted({n.split('/')[0] for n in names})) or 'nothing'


def _message(fmt, where, converted, target_flat, keep, notes) -> str:
  loaded = [k for k in converted if k in target_flat and not merge.matches(k, keep)]
  fresh = [k for k in target_flat if k not in loaded]
  dropped = [k for k in converted if k not in target_flat]
  lines = [f'Initialised from {fmt} checkpoint {where}.',
           f'  restored: {_groups(loaded)}', f'  fresh init: {_groups(fresh)}']
  if dropped:
    lines.append(f'  not used from the checkpoint: {_groups(dropped)}')
  return '\n'.join(lines + [f'  {n}' for n in notes])


def _resample_note(source: dict, src_name: str, converted: dict, dst_name: str) -> list:
  """A log line when a position embedding changed shape on the way in."""
  if src_name not in source or dst_name not in converted:
    return []
  before, after = np.shape(source[src_name]), np.shape(converted[dst_name])
  return [f'{dst_name} resampled {before} -> {after}'] if before != after else []


def _from_vit_npz(init_cfg, path, target_params, target_flat):
  source = vit_npz.load_vit_npz(path)
  converted = vit_npz.vit_to_vivit_flat(
      source, target_params, kernel_init_method=init_cfg.kernel_init_method,
      source_name=path, missing_cls=init_cfg.missing_cls)
  params = merge.merge_params(target_params, converted, source_name=path,
                              allow_missing=vit_npz.FRESH,
                              ignore_unexpected=vit_npz.DROPPED)
  notes = [f'embedding/kernel inflated 2D -> 3D ({init_cfg.kernel_init_method})']
  notes += _resample_note(source, vit_npz.POSEMB, converted, 'Spatial' + vit_npz.POSEMB)
  if 'cls' in source and 'cls_SpatialTransformer' not in target_flat:
    notes.append("the image cls token is not used (config.model.classifier='gap')")
  if 'cls' not in source and 'cls_SpatialTransformer' in target_flat:
    notes.append('cls_SpatialTransformer starts from zeros: the image checkpoint has no '
                 "cls token (config.init_from.missing_cls='zeros')")
  return params, _message('vit_npz', path, converted, target_flat, (), notes)


def _from_video(fmt, init_cfg, path, target_params, target_flat):
  source, where = _video_source(fmt, path, init_cfg.step)
  keep = ((() if init_cfg.restore_temporal else stage2.TEMPORAL)
          + (() if init_cfg.restore_output_projection else stage2.HEAD))
  if init_cfg.restore_output_projection:
    _check_head(merge.flatten(source), target_flat, where)
  converted = stage2.temporal_posemb_to_target(source, target_params)
  params = merge.merge_params(target_params, converted, source_name=where,
                              allow_missing=stage2.FRESH, keep_target=keep)
  notes = []
  if init_cfg.restore_temporal:  # Otherwise nothing temporal was taken or resampled.
    notes = _resample_note(merge.flatten(source), stage2.TEMPORAL_POSEMB, converted,
                           stage2.TEMPORAL_POSEMB)
  return params, _message(fmt, where, converted, target_flat, keep, notes)


def load_init_params(init_cfg: ml_collections.ConfigDict, target_params, *,
                     model_config: ml_collections.ConfigDict) -> Tuple[dict, str]:
  """Initial parameters for a run, from `config.init_from`.

  Args:
    init_cfg: `config.init_from` (checkpoint_path, checkpoint_format, step,
      kernel_init_method, restore_temporal, restore_output_projection).
    target_params: the model's freshly initialised parameters; they fix every name
      and shape, and supply whatever the checkpoint does not.
    model_config: `config.model`, quoted in the message.

  Returns:
    (params, message): the merged tree, and a few lines for the run log saying what
    was restored from where and what kept its fresh init.

  Raises:
    FileNotFoundError: the path does not exist or holds no checkpoint.
    ValueError: an unknown format/method, or a checkpoint that does not fit the model
      (every missing/unexpected name and shape mismatch listed).
  """
  if not init_cfg.checkpoint_path:
    return target_params, ('No init checkpoint (config.init_from.checkpoint_path is '
                           'empty): every parameter from random initialisation.')
  path = _validate(init_cfg)
  fmt = init_cfg.checkpoint_format
  fmt = detect_format(path) if fmt == 'auto' else fmt
  target_flat = merge.flatten(target_params)
  if fmt == 'vit_npz':
    params, message = _from_vit_npz(init_cfg, path, target_params, target_flat)
  else:
    params, message = _from_video(fmt, init_cfg, path, target_params, target_flat)
  cfg = models.resolve_model_config(model_config)  # A variant fixes the sizes.
  model = (f'  into: {cfg.variant or "ViViT-FE"} hidden_size={cfg.hidden_size}, '
           f'patches={tuple(cfg.patches.size)}, classifier={cfg.classifier}, '
           f'adapter={cfg.adapter.type}')
  return params, message + '\n' + model
