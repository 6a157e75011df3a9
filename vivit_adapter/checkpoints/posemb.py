"""Resampling learned position embeddings to a new patch grid or clip length.

Linear interpolation here maps the first and last positions onto the first and last
positions ("align corners", the convention of `scipy.ndimage.zoom(order=1)` that scenic
and the original ViT release use): a temporal embedding interpolated from 4 to 8
indices starts and ends where the trained one did, and a linear ramp stays a ramp.
The CLS row, when present, has no position on the grid and is kept unchanged.
"""

import math
from typing import Optional, Sequence

import numpy as np


def linear_resize_axis(x: np.ndarray, new_len: int, axis: int) -> np.ndarray:
  """Linearly resamples `x` along `axis` to `new_len` points, ends aligned."""
  old_len = x.shape[axis]
  if new_len <= 0 or old_len == 0:
    raise ValueError(f'Cannot resize an axis of length {old_len} to {new_len}.')
  if new_len == old_len:
    return x
  pos = np.linspace(0.0, old_len - 1, new_len) if new_len > 1 else np.zeros(1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, old_len - 1)
  shape = [1] * x.ndim
  shape[axis] = new_len
  frac = (pos - lo).reshape(shape)
  return (np.take(x, lo, axis=axis) * (1.0 - frac) + np.take(x, hi, axis=axis) * frac)


def _split_cls(posemb: np.ndarray, has_cls: bool, what: str):
  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f'{what}: expected a position embedding of shape (1, tokens, width), '
                     f'got {posemb.shape}.')
  if has_cls:
    if posemb.shape[1] < 1:
      raise ValueError(f'{what}: has_cls=True but the embedding has no rows.')
    return posemb[:, :1], posemb[:, 1:]
  return posemb[:, :0], posemb


def grid_of(num_tokens: int, what: str) -> tuple:
  """The (rows, cols) of a square patch grid with `num_tokens` patches."""
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(f'{what}: {num_tokens} patch tokens do not form a square grid; '
                     'give the grid explicitly.')
  return side, side


def resize_spatial_posemb(posemb: np.ndarray, new_grid: Sequence[int], has_cls: bool,
                          old_grid: Optional[Sequence[int]] = None) -> np.ndarray:
  """Bilinearly resamples a spatial position embedding to a new patch grid.

  Args:
    posemb: (1, [1+]gh*gw, D), patches in row-major grid order (as the tubelet
      embedding flattens them).
    new_grid: (gh', gw') of the output, square or not.
    has_cls: whether row 0 is the CLS token's embedding; it is kept as is.
    old_grid: (gh, gw) of the input; None means square.

  Returns:
    (1, [1+]gh'*gw', D), same dtype.
  """
  cls, grid = _split_cls(posemb, has_cls, 'resize_spatial_posemb')
  gh, gw = tuple(old_grid) if old_grid else grid_of(grid.shape[1], 'resize_spatial_posemb')
  if gh * gw != grid.shape[1]:
    raise ValueError(f'resize_spatial_posemb: old_grid {(gh, gw)} has {gh * gw} patches but '
                     f'the embedding has {grid.shape[1]} patch rows.')
  nh, nw = (int(n) for n in new_grid)
  x = grid.reshape(gh, gw, -1).astype(np.float64)
  x = linear_resize_axis(linear_resize_axis(x, nh, 0), nw, 1)
  x = x.reshape(1, nh * nw, -1).astype(grid.dtype)
  return np.concatenate([cls, x], axis=1)


def interpolate_temporal_posemb(posemb: np.ndarray, new_len: int,
                                has_cls: bool) -> np.ndarray:
  """Linearly interpolates a temporal position embedding to `new_len` indices.

  Args:
    posemb: (1, [1+]F, D), one row per temporal index (after an optional CLS row).
    new_len: the number of temporal indices of the output (without the CLS row).
    has_cls: whether row 0 is the CLS token's embedding; it is kept as is.

  Returns:
    (1, [1+]new_len, D), same dtype; the input itself when the lengths are equal.
  """
  cls, rows = _split_cls(posemb, has_cls, 'interpolate_temporal_posemb')
  if rows.shape[1] == new_len:
    return np.asarray(posemb)
  x = linear_resize_axis(rows.astype(np.float64), int(new_len), 1).astype(rows.dtype)
  return np.concatenate([cls, x], axis=1)


def resample_note(name: str, before, after) -> list:
  """A run-log line saying that position embedding `name` changed shape; [] if it did not."""
  before, after = np.shape(before), np.shape(after)
  return [f'{name} resampled {before} -> {after}'] if before != after else []
