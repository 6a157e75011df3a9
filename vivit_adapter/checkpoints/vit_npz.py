"""Image ViT `.npz` checkpoints -> the tubelet embedding and spatial encoder of a ViViT FE.

Two flattened layouts exist in the wild (see reference/vit_npz_names.txt):
* google-research/vision_transformer: blocks named `MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`, `Transformer/posembed_input/pos_embedding` whose first
  row belongs to `cls`;
* big_vision: `MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`, a root
  `pos_embedding` over the patches only (big_vision prepends its cls token after adding
  position embeddings), an optional `params/` prefix, possibly no cls token, possibly
  scanned blocks stacked under `Transformer/encoderblock/`;
* scenic's image ViT: big_vision's block names with vision_transformer's
  `Transformer/posembed_input/pos_embedding` (cls row first).
`load_vit_npz` turns both into one canonical flat layout (this project's block names,
a position embedding whose first row is the cls row exactly when `cls` exists), so the
mapping into the video model is written once. The image model's names are this
module's to spell (it owns the format); the video model's come from `models.names`.
"""

import re
from typing import Mapping, Optional, Sequence

import numpy as np

from data_pipelines import fs
from vivit_adapter.checkpoints import merge, posemb
from vivit_adapter.models import names

VISION_TRANSFORMER, BIG_VISION = 'vision_transformer', 'big_vision'
KERNEL_INIT_METHODS = ('central_frame', 'average')
# What a 'token' model does with a checkpoint without cls (see `vit_to_vivit_spatial`).
MISSING_CLS = ('error', 'zeros')
POSEMB = 'Transformer/posembed_input/pos_embedding'
# Image-classifier parts with no counterpart in the video model.
DROPPED = ('head', 'pre_logits', 'MAPHead_0')
# Video-model parts an image checkpoint cannot provide: they keep their fresh init.
FRESH = names.TEMPORAL_GROUP + names.STAGE2_NEW + names.HEAD_GROUP
# Top-level image names -> the video model's (the image's `cls` goes by `_spatial_cls`);
# any other name is kept, so `merge_params` reports it unless it is in DROPPED.
_TO_VIDEO = {'embedding': names.EMBEDDING, 'Transformer': names.SPATIAL}
_VT_BLOCK_NAMES = {'LayerNorm_0': names.ATTENTION_NORM,
                   'MultiHeadDotProductAttention_1': names.ATTENTION,
                   'LayerNorm_2': names.MLP_NORM, 'MlpBlock_3': names.MLP}
_VIDEO_KERNEL = f'{names.EMBEDDING}/kernel'


def detect_vit_layout(flat_names: Sequence[str], source_name: str = 'the .npz') -> str:
  """'vision_transformer' or 'big_vision', from the flat names (no `params/` prefix)."""
  if any('/MultiHeadDotProductAttention_1/' in n for n in flat_names):
    return VISION_TRANSFORMER
  if any(n.startswith('Transformer/encoderblock') for n in flat_names):
    return BIG_VISION
  raise ValueError(
      f'{source_name} is not an image ViT checkpoint: no Transformer/encoderblock_* '
      f'entries among its {len(flat_names)} arrays (first: {sorted(flat_names)[:5]}).')


def load_vit_npz(path: str) -> dict:
  """Reads an image ViT .npz of either layout into the canonical flat layout.

  Returns:
    {name: np.ndarray} with names `embedding/{kernel,bias}`, optional `cls`,
    `Transformer/posembed_input/pos_embedding` (cls row first iff `cls` exists),
    `Transformer/encoderblock_i/{LayerNorm_0,MultiHeadDotProductAttention_0,LayerNorm_1,
    MlpBlock_0}/...`, `Transformer/encoder_norm/...`, and any head entries as stored.
  """
  with fs.open(path, 'rb') as f, np.load(f, allow_pickle=False) as npz:
    flat = {re.sub(r'^params/', '', k): np.asarray(npz[k]) for k in npz.files}
  layout = detect_vit_layout(list(flat), str(path))
  if layout == VISION_TRANSFORMER:
    return {_rename_vt_block(k): v for k, v in flat.items()}
  return _canonical_big_vision(_unstack_scanned_blocks(flat))


def _rename_vt_block(name: str) -> str:
  parts = name.split('/')
  if len(parts) > 2 and parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
    parts[2] = _VT_BLOCK_NAMES.get(parts[2], parts[2])
  return '/'.join(parts)


def _unstack_scanned_blocks(flat: dict) -> dict:
  """big_vision `scan=True` stores all blocks stacked on axis 0 under `encoderblock/`."""
  out = {}
  for k, v in flat.items():
    if k.startswith('Transformer/encoderblock/'):
      rest = k[len('Transformer/encoderblock/'):]
      for i in range(v.shape[0]):
        out[f'Transformer/encoderblock_{i}/{rest}'] = v[i]
    else:
      out[k] = v
  return out


def _canonical_big_vision(flat: dict) -> dict:
  out = dict(flat)
  if POSEMB in out and 'pos_embedding' not in out:
    return out  # scenic's image ViT: big_vision block names, posemb with the cls row.
  if 'pos_embedding' not in out:
    raise ValueError(f'ViT checkpoint with neither a root pos_embedding nor {POSEMB}; found '
                     f'{sorted(out)[:8]}...')
  pe = out.pop('pos_embedding')
  if 'cls' in out:
    # big_vision adds no position embedding to its cls token: a zero row is the same.
    pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
  out[POSEMB] = pe
  return out


def inflate_kernel(kernel: np.ndarray, t: int, method: str) -> np.ndarray:
  """A 2D patch kernel (h,w,c,D) as a 3D tubelet kernel (t,h,w,c,D).

  'central_frame' puts the kernel at index t//2 and zeros elsewhere; 'average' tiles it
  over t and divides by t. Either way a video of t identical frames embeds exactly like
  the image does under the 2D kernel.
  """
  kernel = np.asarray(kernel)
  if method == 'central_frame':
    out = np.zeros((t,) + kernel.shape, kernel.dtype)
    out[t // 2] = kernel
    return out
  if method == 'average':
    return np.repeat(kernel[None] / t, t, axis=0).astype(kernel.dtype)
  raise ValueError(f'config.init_from.kernel_init_method={method!r}; expected one of '
                   f'{KERNEL_INIT_METHODS}.')


def _embedding_kernel(vit_flat: Mapping, target_flat: Mapping, method: str,
                      source_name: str) -> np.ndarray:
  src = np.asarray(vit_flat['embedding/kernel'])
  tgt_shape = tuple(np.shape(target_flat[_VIDEO_KERNEL]))
  if src.ndim != 4 or src.shape != tgt_shape[1:]:
    raise ValueError(
        f'{source_name}: embedding/kernel has shape {src.shape}, which cannot inflate to the '
        f"model's {tgt_shape} (t, h, w, c, D): the patch size or width differ; set "
        'config.model.patches.size and hidden_size to the image model\'s.')
  return inflate_kernel(src, tgt_shape[0], method)


def _spatial_cls(vit_flat: Mapping, target_flat: Mapping, missing_cls: str,
                 source_name: str) -> dict:
  """The cls entry for a 'token' model; {} for a 'gap' model (the image cls is unused)."""
  if names.SPATIAL_CLS not in target_flat:
    return {}
  if 'cls' in vit_flat:
    return {names.SPATIAL_CLS: np.asarray(vit_flat['cls'])}
  if missing_cls == 'zeros':
    return {names.SPATIAL_CLS: np.zeros(np.shape(target_flat[names.SPATIAL_CLS]), np.float32)}
  raise ValueError(
      f"{source_name} has no 'cls' token (an image model pooled by 'gap' or 'map'), but "
      f"config.model.classifier='token' needs {names.SPATIAL_CLS}. Set "
      "config.model.classifier='gap', or config.init_from.missing_cls='zeros' to start the "
      'cls token from zeros (it then attends to features it was never trained with).')


def _spatial_posemb(vit_flat: Mapping, target_flat: Mapping,
                    target_grid: Optional[Sequence[int]], source_name: str) -> np.ndarray:
  """The image position embedding on the model's patch grid, cls row as the model has it."""
  pe = np.asarray(vit_flat[POSEMB])
  src_cls, grid = (pe[:, :1], pe[:, 1:]) if 'cls' in vit_flat else (None, pe)
  tgt_shape = tuple(np.shape(target_flat[names.SPATIAL_POSEMB]))
  tgt_has_cls = names.SPATIAL_CLS in target_flat
  n_tgt = tgt_shape[1] - int(tgt_has_cls)
  new_grid = tuple(target_grid) if target_grid else posemb.grid_of(n_tgt, source_name)
  if new_grid[0] * new_grid[1] != n_tgt:
    raise ValueError(f'target_grid={new_grid} has {new_grid[0] * new_grid[1]} patches, but '
                     f'the model\'s {names.SPATIAL_POSEMB} {tgt_shape} has {n_tgt}: give '
                     'the (rows, cols) of the model\'s input frames over its patch size.')
  if grid.shape[1] != n_tgt or target_grid:
    grid = posemb.resize_spatial_posemb(grid, new_grid, has_cls=False)
  if not tgt_has_cls:
    return grid
  if src_cls is None:
    src_cls = np.zeros_like(grid[:, :1])
  return np.concatenate([src_cls, grid], axis=1)


def _video_name(name: str) -> str:
  top, sep, rest = name.partition('/')
  return _TO_VIDEO.get(top, top) + sep + rest


def _to_video(vit_flat: Mapping, target_flat: Mapping, *, kernel_init_method: str,
              source_name: str, target_grid: Optional[Sequence[int]],
              missing_cls: str) -> dict:
  """The canonical image ViT entries renamed and reshaped into the video model's names."""
  needed = ('embedding/kernel', POSEMB) + (  # CLIP's towers have no patch bias
      ('embedding/bias',) if f'{names.EMBEDDING}/bias' in target_flat else ())
  missing = [k for k in needed if k not in vit_flat]
  if missing:
    raise ValueError(f'{source_name}: image ViT checkpoint lacks {missing}.')
  out = {_video_name(k): np.asarray(v) for k, v in vit_flat.items() if k != 'cls'}
  out[_VIDEO_KERNEL] = _embedding_kernel(vit_flat, target_flat, kernel_init_method,
                                         source_name)
  out[names.SPATIAL_POSEMB] = _spatial_posemb(vit_flat, target_flat, target_grid, source_name)
  out.update(_spatial_cls(vit_flat, target_flat, missing_cls, source_name))
  return out


def _notes(vit_flat: Mapping, converted: Mapping, target_flat: Mapping,
           kernel_init_method: str) -> list:
  """The run log's account of what changed between the image model and the video model."""
  notes = [f'{_VIDEO_KERNEL} inflated 2D -> 3D ({kernel_init_method})']
  notes += posemb.resample_note(names.SPATIAL_POSEMB, vit_flat[POSEMB],
                                converted[names.SPATIAL_POSEMB])
  if 'cls' in vit_flat and names.SPATIAL_CLS not in target_flat:
    notes.append("the image cls token is not used (config.model.classifier='gap')")
  if 'cls' not in vit_flat and names.SPATIAL_CLS in target_flat:
    notes.append(f'{names.SPATIAL_CLS} starts from zeros: the image checkpoint has no '
                 "cls token (config.init_from.missing_cls='zeros')")
  return notes


def vit_to_vivit_spatial(vit_flat: Mapping, target_params, *,
                         kernel_init_method: str = 'central_frame', source_name: str,
                         target_grid: Optional[Sequence[int]] = None,
                         missing_cls: str = 'error',
                         ignore_unexpected: Sequence[str] = DROPPED,
                         notes: Sequence[str] = ()) -> merge.Merged:
  """Initialises embedding and spatial encoder of `target_params` from an image ViT.

  Args:
    vit_flat: the output of `load_vit_npz`.
    target_params: the video model's freshly initialised parameters.
    kernel_init_method: one of KERNEL_INIT_METHODS (see `inflate_kernel`).
    source_name: the checkpoint path, quoted in errors.
    target_grid: the model's (rows, cols) patch grid; None means square.
    missing_cls: one of MISSING_CLS: what a 'token' model does with a checkpoint
      without cls. 'error' by default because a zero cls token over a gap-trained
      encoder is a different model, which should be a deliberate choice.
    ignore_unexpected: patterns (`merge.matches`) of checkpoint names the video model
      has no place for, dropped and reported as unused (the image heads by default).
    notes: the caller's own lines for the run log, after this function's.

  Returns:
    `merge.Merged`: params holds embedding (inflated 2D->3D), cls_SpatialTransformer
    and SpatialTransformer (position embedding resized to the model's grid) from the
    image model, temporal encoder, adapter and output_projection from `target_params`;
    notes say what was inflated, resampled or zero-filled.

  Raises:
    ValueError: a depth or width mismatch (names every key and both shapes), a
      patch-size mismatch, a missing cls token with missing_cls='error'.
  """
  # A typo such as 'zero' would otherwise act as 'error' without saying so.
  if missing_cls not in MISSING_CLS:
    raise ValueError(f'missing_cls={missing_cls!r}; expected one of {MISSING_CLS}.')
  target_flat = merge.flatten(target_params)
  converted = _to_video(vit_flat, target_flat, kernel_init_method=kernel_init_method,
                        source_name=source_name, target_grid=target_grid,
                        missing_cls=missing_cls)
  params = merge.merge_params(target_params, converted, source_name=source_name,
                              allow_missing=FRESH, ignore_unexpected=ignore_unexpected)
  return merge.account(params, target_params, converted,
                       notes=_notes(vit_flat, converted, target_flat, kernel_init_method)
                       + list(notes))
