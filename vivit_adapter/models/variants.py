"""Named model sizes: 'B/16x2' -> width, depths, heads, MLP width and tubelet size.

The letter picks the ViT size (Ti, S, B, L, H, and g for a giant spatial encoder), the
first number the spatial patch size and the number after 'x' the tubelet's temporal
extent. The temporal encoder has the same width, heads and MLP as the spatial one and
`TEMPORAL_LAYERS` blocks, as in scenic's factorised-encoder configs.
"""

import re
from typing import Dict, Tuple

import ml_collections

# name -> (width, spatial depth, MLP width, heads)
VIT_SIZES: Dict[str, Tuple[int, int, int, int]] = {
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
    'g': (1408, 40, 6144, 16),
}
TEMPORAL_LAYERS = 4

_VARIANT_RE = re.compile(r'^(Ti|S|B|L|H|g)/(\d+)x(\d+)$')


def parse_variant(name: str) -> Dict[str, object]:
  """'B/16x2' -> dict of the model config fields it sets."""
  match = _VARIANT_RE.match(name)
  if not match:
    raise ValueError(
        f'Unknown model variant {name!r}: expected SIZE/PATCHxFRAMES with SIZE one of '
        f'{sorted(VIT_SIZES)}, e.g. "B/16x2".')
  size, patch, tubelet = match.group(1), int(match.group(2)), int(match.group(3))
  width, depth, mlp_dim, heads = VIT_SIZES[size]
  return {
      'hidden_size': width,
      'patches.size': (patch, patch, tubelet),
      'spatial_transformer': {'num_layers': depth, 'num_heads': heads, 'mlp_dim': mlp_dim},
      'temporal_transformer': {'num_layers': TEMPORAL_LAYERS, 'num_heads': heads,
                               'mlp_dim': mlp_dim},
  }


def apply_variant(model_config: ml_collections.ConfigDict, name: str) -> None:
  """Writes the fields of variant `name` into `model_config` (in place)."""
  fields = parse_variant(name)
  model_config.hidden_size = fields['hidden_size']
  model_config.patches.size = fields['patches.size']
  for enc in ('spatial_transformer', 'temporal_transformer'):
    for key, value in fields[enc].items():
      model_config[enc][key] = value
