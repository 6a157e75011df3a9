"""The trainer's one entry point: `config.init_from` -> initial parameters + a log message.

Why one function: the run's log should say, in one place, exactly what came from which
checkpoint and what kept its fresh init, and every format should fail the same way
(names and shapes) before training starts rather than at the first step. Each format
goes through the named surgery function its tests exercise (`vit_npz.vit_to_vivit_spatial`,
`stage2.stage1_to_stage2`), whose account of restored/fresh names makes the message.
"""

import json
import os
import re
from typing import Optional, Sequence, Tuple

import ml_collections
import numpy as np

from data_pipelines import cli
from data_pipelines import fs
from vivit_adapter import configs
from vivit_adapter.checkpoints import merge, scenic, stage2, towers, vit_npz, workdir
from vivit_adapter.models import names

FORMATS = ('auto', 'workdir', 'scenic', 'vit_npz', towers.HUGGINGFACE, towers.OPEN_CLIP)
# The image formats: they fill the embedding and spatial encoder, the rest stays fresh.
_IMAGE_FORMATS = ('vit_npz', towers.HUGGINGFACE, towers.OPEN_CLIP)
# config.init_from keys whose value is one of this package's names -> those names.
CONFIG_CHOICES = {
    'init_from.checkpoint_format': FORMATS,
    'init_from.kernel_init_method': vit_npz.KERNEL_INIT_METHODS,
    'init_from.missing_cls': vit_npz.MISSING_CLS,
}
# The model sizes a stage-1 run and the stage-2 run initialised from it share (stage 2
# adds an adapter and changes the frame count on purpose).
_SHARED_SIZE_KEYS = ('model.variant', 'model.hidden_size', 'model.patches',
                     'model.spatial_transformer', 'model.temporal_transformer',
                     'model.classifier')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key when config.init_from names a checkpoint format or
  conversion this package does not have. Run by the start-up check."""
  configs.check_choices(config, CONFIG_CHOICES)


def detect_format(path: str) -> str:
  """One of FORMATS but 'auto', for an existing checkpoint path.

  A directory with `config.json` and `model.safetensors` is a Hugging Face model (a
  workdir has a config.json but no safetensors); a `.safetensors` file is OpenCLIP's;
  a directory with orbax step directories (or `checkpoints/`) is a workdir; a
  directory of `checkpoint_<step>` entries, or one of those, is scenic/flax; a `.npz`
  file is an image ViT; any other file is taken as a flax msgpack checkpoint.
  """
  path = os.fspath(path)
  tower = towers.detect(path)
  if tower:
    return tower
  if fs.isdir(path):
    entries = fs.listdir(path)
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


def _existing_path(init_cfg: ml_collections.ConfigDict) -> str:
  # `check_config` checks the choices of checkpoint_format, kernel_init_method and
  # missing_cls (CONFIG_CHOICES) at start-up.
  path = os.fspath(init_cfg.checkpoint_path)
  if not fs.exists(path):
    raise FileNotFoundError(f'config.init_from.checkpoint_path={path!r} does not exist.')
  return path


def _check_head(source_flat: dict, target_flat: dict, path: str) -> None:
  """A head for other classes is the common mistake; say how to fix it."""
  for name in (f'{names.HEAD}/kernel', f'{names.HEAD}/bias'):
    if name in source_flat and name in target_flat:
      src, tgt = np.shape(source_flat[name]), np.shape(target_flat[name])
      if src[-1] != tgt[-1]:
        raise cli.CheckpointMismatchError(
            f'Checkpoint {path}: {name} has {src[-1]} classes {src}, the model has '
            f'{tgt[-1]} {tgt}. To train a new head for this dataset, set '
            'config.init_from.restore_output_projection=False.')


def _video_source(fmt: str, path: str, step: int) -> Tuple[dict, str]:
  if fmt == 'workdir':
    directory, step = workdir.find_checkpoint_step(path, step)
    return workdir.restore_workdir_params(directory, step), f'{directory}/{step}'
  if fmt != 'scenic':  # Matched by name: another value must not be read as scenic.
    raise ValueError(f'config.init_from.checkpoint_format={fmt!r}; expected one of {FORMATS}.')
  if step != -1 and fs.isdir(path) and detect_format(path) == 'scenic':
    path = os.path.join(path, f'checkpoint_{step}')  # config.init_from.step applies here too.
  return scenic.load_scenic_checkpoint(path), path


def _groups(flat_names) -> str:
  return ', '.join(sorted({n.split('/')[0] for n in flat_names})) or 'nothing'


def _message(fmt: str, where: str, merged: merge.Merged) -> str:
  lines = [f'Initialised from {fmt} checkpoint {where}.',
           f'  restored: {_groups(merged.restored)}', f'  fresh init: {_groups(merged.fresh)}']
  if merged.unused:
    lines.append(f'  not used from the checkpoint: {_groups(merged.unused)}')
  return '\n'.join(lines + [f'  {n}' for n in merged.notes])


def _model_line(model_config: ml_collections.ConfigDict, target_flat: dict) -> str:
  """The model the checkpoint went into; sizes read off its tubelet kernel (t,h,w,c,D)."""
  t, h, w, _, width = np.shape(target_flat[f'{names.EMBEDDING}/kernel'])
  return (f'  into: {model_config.variant or "ViViT-FE"} hidden_size={width}, '
          f'patches={(h, w, t)}, classifier={model_config.classifier}, '
          f'adapter={model_config.adapter.type}')


def _patch_grid(target_flat: dict, frame_size: Sequence[int]) -> Tuple[int, int]:
  """The (rows, cols) of patches the model cuts from frames of `frame_size` (h, w)."""
  _, ph, pw = np.shape(target_flat[f'{names.EMBEDDING}/kernel'])[:3]
  return int(frame_size[0]) // ph, int(frame_size[1]) // pw


def _from_image(fmt, init_cfg, path, target_params, target_grid,
                model_config) -> merge.Merged:
  """An image model (ViT .npz or an ecosystem tower) into embedding + spatial encoder."""
  if fmt == 'vit_npz':
    flat, notes, ignored = vit_npz.load_vit_npz(path), (), vit_npz.DROPPED
  else:
    (flat, notes), ignored = towers.load_tower(fmt, path, model_config), towers.IGNORED
  return vit_npz.vit_to_vivit_spatial(
      flat, target_params, kernel_init_method=init_cfg.kernel_init_method,
      source_name=path, target_grid=target_grid, missing_cls=init_cfg.missing_cls,
      ignore_unexpected=ignored, notes=notes)


def _size_changes(where: str, model_config: ml_collections.ConfigDict) -> str:
  """'model.hidden_size: 64 in RUN/config.json, 32 in this config' for a workdir
  checkpoint (`where` = RUN/checkpoints/STEP) whose run had other model sizes; else ''."""
  path = os.path.join(os.path.dirname(os.path.dirname(where)), configs.CONFIG_FILE)
  if not fs.exists(path):
    return ''
  with fs.open(path) as f:
    saved = json.load(f).get('model', {})
  changes = configs.differences({'model': saved}, {'model': model_config.to_dict()})
  return '; '.join(f'{k}: {old!r} in {path}, {new!r} in this config'
                   for k, (old, new) in changes.items()
                   if configs.under(k, _SHARED_SIZE_KEYS))


def _from_video(fmt, init_cfg, path, target_params,
                model_config) -> Tuple[merge.Merged, str]:
  source, where = _video_source(fmt, path, init_cfg.step)
  keep = ((() if init_cfg.restore_temporal else names.TEMPORAL_GROUP)
          + (() if init_cfg.restore_output_projection else names.HEAD_GROUP))
  if init_cfg.restore_output_projection:
    _check_head(merge.flatten(source), merge.flatten(target_params), where)
  try:
    return stage2.stage1_to_stage2(source, target_params, source_name=where,
                                   keep_target=keep), where
  except cli.CheckpointMismatchError as e:
    changes = _size_changes(where, model_config) if fmt == 'workdir' else ''
    if not changes:
      raise
    raise cli.CheckpointMismatchError(
        f'The init checkpoint was trained with other model sizes: {changes}. Make '
        f'config.model match it, or train a new stage 1.\n{e}') from e


def load_init_params(init_cfg: ml_collections.ConfigDict, target_params, *,
                     model_config: ml_collections.ConfigDict,
                     frame_size: Optional[Sequence[int]] = None) -> Tuple[dict, str]:
  """Initial parameters for a run, from `config.init_from`.

  Args:
    init_cfg: `config.init_from` (checkpoint_path, checkpoint_format, step,
      kernel_init_method, missing_cls, restore_temporal, restore_output_projection),
      validated by `check_config` at start-up.
    target_params: the model's freshly initialised parameters; they fix every name
      and shape, and supply whatever the checkpoint does not.
    model_config: `config.model`, quoted in the message.
    frame_size: (height, width) of the model's input frames, which with the patch
      size fixes the spatial patch grid that an image position embedding is resized
      to; None takes the grid as square.

  Returns:
    (params, message): the merged tree, and a few lines for the run log saying what
    was restored from where and what kept its fresh init.

  Raises:
    FileNotFoundError: the path does not exist or holds no checkpoint.
    ValueError: a checkpoint that does not fit the model (every missing/unexpected
      name and shape mismatch listed).
  """
  if not init_cfg.checkpoint_path:
    return target_params, ('No init checkpoint (config.init_from.checkpoint_path is '
                           'empty): every parameter from random initialisation.')
  path = _existing_path(init_cfg)
  fmt = init_cfg.checkpoint_format
  fmt = detect_format(path) if fmt == 'auto' else fmt
  target_flat = merge.flatten(target_params)
  if fmt in _IMAGE_FORMATS:
    grid = _patch_grid(target_flat, frame_size) if frame_size else None
    merged = _from_image(fmt, init_cfg, path, target_params, grid, model_config)
    where = path
  else:
    merged, where = _from_video(fmt, init_cfg, path, target_params, model_config)
  return merged.params, (_message(fmt, where, merged) + '\n'
                         + _model_line(model_config, target_flat))
