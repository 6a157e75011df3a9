"""What the model eats: pixels as the input pipeline yields them, normalised on the device.

The pipelines (data_pipelines.video_ops) resize, crop and augment on the host and hand
over uint8 frames: a quarter of the host memory and host-to-device bytes of float32.
Normalisation (`config.dataset.normalization`) is a per-channel affine map, applied by
`normalize` inside the jitted step. The model calls it itself, per chunk of frames
on the chunked path, so a long clip never exists as a float copy on the device.

This module owns the normalisations: their names and their mean/std constants.
"""

from typing import Tuple

import jax.numpy as jnp
import numpy as np

# name -> (per-channel mean, per-channel std) of [0, 1] pixels.
_MEAN_STD = {
    'minus_one_to_one': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1]
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # OpenAI CLIP's (and OpenCLIP's) pixel statistics, which its towers were trained on.
    'clip': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
NORMALIZATIONS = tuple(_MEAN_STD)


def pixel_affine(normalization: str) -> Tuple[np.ndarray, np.ndarray]:
  """(scale, offset), float32 per channel: normalised = pixel * scale + offset for
  pixel values in [0, 255]."""
  if normalization not in _MEAN_STD:
    raise ValueError(f'config.dataset.normalization={normalization!r}; expected one of '
                     f'{NORMALIZATIONS}.')
  mean, std = (np.asarray(v, np.float64) for v in _MEAN_STD[normalization])
  # In float64, rounded once: (p / 255 - mean) / std == p * scale + offset.
  return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize(pixels, normalization: str, dtype=jnp.float32):
  """Pixel values in [0, 255] -> the model's input, in `dtype`.

  `pixels` is uint8 as the pipelines yield it, or float (e.g. after mixup, which
  blends pixels; normalisation is affine, so blending before or after is the same).
  The arithmetic is float32 whatever `dtype` is: a bfloat16 model gets the rounded
  result, not a bfloat16 computation of it.
  """
  scale, offset = pixel_affine(normalization)
  return (pixels.astype(jnp.float32) * scale + offset).astype(dtype)
