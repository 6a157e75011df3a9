"""Named model sizes: 'B/16x2' -> width, depths, heads, MLP width and tubelet size.

The letter picks the ViT size (Ti, S, B, L, H, and g for a giant spatial encoder), the
first number the spatial patch size and the number after 'x' the tubelet's temporal
extent. The temporal encoder has the same width, heads and MLP as the spatial one and
`TEMPORAL_LAYERS` blocks, as in scenic's factorised-encoder configs.
"""

import re
from typing import Dict, Iterable, Tuple

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


# The config.model keys a variant writes (dotted, relative to config.model).
SIZE_KEYS = ('hidden_size', 'patches.size',
             'spatial_transformer.num_layers', 'spatial_transformer.num_heads',
             'spatial_transformer.mlp_dim',
             'temporal_transformer.num_layers', 'temporal_transformer.num_heads',
             'temporal_transformer.mlp_dim')


def parse_variant(name: str) -> Dict[str, object]:
  """'B/16x2' -> {config.model key in SIZE_KEYS: value}."""
  match = _VARIANT_RE.match(name)
  if not match:
    raise ValueError(
        f'Unknown model variant {name!r}: expected SIZE/PATCHxFRAMES with SIZE one of '
        f'{sorted(VIT_SIZES)}, e.g. "B/16x2".')
  size, patch, tubelet = match.group(1), int(match.group(2)), int(match.group(3))
  width, depth, mlp_dim, heads = VIT_SIZES[size]
  fields = {'hidden_size': width, 'patches.size': (patch, patch, tubelet)}
  for enc, num_layers in (('spatial_transformer', depth),
                          ('temporal_transformer', TEMPORAL_LAYERS)):
    fields.update({f'{enc}.num_layers': num_layers, f'{enc}.num_heads': heads,
                   f'{enc}.mlp_dim': mlp_dim})
  return fields


def apply_variant(model_config: ml_collections.ConfigDict, name: str,
                  keep: Iterable[str] = ()) -> None:
  """Sets `model_config.variant = name` and writes its sizes now (in place).

  The sizes are written when the config is built, never later, so that whatever is set
  after this call (an experiment's line, a --config.model.hidden_size override) wins and
  the saved config.json records the sizes the model really has.

  Args:
    model_config: config.model.
    name: a variant such as 'B/16x2'.
    keep: keys of SIZE_KEYS not to write (set explicitly by the caller).
  """
  fields = parse_variant(name)
  model_config.variant = name
  for key, value in fields.items():
    if key in keep:
      continue
    group, _, leaf = key.rpartition('.')
    node = model_config[group] if group else model_config
    node[leaf] = value
