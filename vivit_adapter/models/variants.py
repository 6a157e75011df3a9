"""Named model sizes: 'B/16x2' -> width, depths, heads, MLP width and tubelet size.

The letter picks the ViT size (Ti, S, B, L, H, and g for a giant spatial encoder;
So400m for SigLIP's shape-optimised 400M tower), the first number the spatial patch
size and the number after 'x' the tubelet's temporal extent. The temporal encoder has
the same width, heads and MLP as the spatial one and `TEMPORAL_LAYERS` blocks, as in
scenic's factorised-encoder configs.

An image tower's name before the size, as in 'CLIP-L/14x2', 'SigLIP-So400m/14x2' or
'DINOv2-B/14x2', also sets that tower's switches (`TOWERS`, models/towers.py), so a
checkpoint of that family loads into the model as it is.
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
    'So400m': (1152, 27, 4304, 16),
}
TEMPORAL_LAYERS = 4

# Tower name -> the config.model.spatial_transformer switches (and patches.bias) of its
# checkpoints. CLIP is OpenAI's (quick-GELU, as Hugging Face's CLIP checkpoints);
# OpenCLIP's own trainings use exact GELU. DINOv2reg: DINOv2 with 4 register tokens.
_CLIP = {'pre_norm': True, 'mlp_activation': 'quick_gelu', 'layer_norm_epsilon': 1e-5,
         'patches.bias': False, 'pooling': 'token'}
_DINOV2 = {'mlp_activation': 'gelu', 'layer_scale': True, 'pooling': 'token'}
TOWERS: Dict[str, Dict[str, object]] = {
    'CLIP': _CLIP,
    'OpenCLIP': {**_CLIP, 'mlp_activation': 'gelu'},
    'SigLIP': {'mlp_activation': 'gelu_tanh', 'pooling': 'map'},
    'DINOv2': _DINOV2,
    'DINOv2reg': {**_DINOV2, 'num_registers': 4},
}

_VARIANT_RE = re.compile(rf'^(?:({"|".join(TOWERS)})-)?({"|".join(VIT_SIZES)})'
                         r'/(\d+)x(\d+)$')


# The config.model keys a variant writes (dotted, relative to config.model).
SIZE_KEYS = ('hidden_size', 'patches.size',
             'spatial_transformer.num_layers', 'spatial_transformer.num_heads',
             'spatial_transformer.mlp_dim',
             'temporal_transformer.num_layers', 'temporal_transformer.num_heads',
             'temporal_transformer.mlp_dim')
# The keys a tower variant writes besides (dotted, relative to config.model).
TOWER_KEYS = ('patches.bias',) + tuple(
    f'spatial_transformer.{k}' for k in ('pre_norm', 'mlp_activation', 'layer_norm_epsilon',
                                         'layer_scale', 'num_registers', 'pooling'))


def parse_variant(name: str) -> Dict[str, object]:
  """'B/16x2' -> {config.model key in SIZE_KEYS: value}; a tower variant such as
  'CLIP-L/14x2' adds every key of TOWER_KEYS (its switches, the rest at their defaults)."""
  match = _VARIANT_RE.match(name)
  if not match:
    raise ValueError(
        f'Unknown model variant {name!r}: expected [TOWER-]SIZE/PATCHxFRAMES with SIZE one '
        f'of {sorted(VIT_SIZES)} and TOWER one of {sorted(TOWERS)}, e.g. "B/16x2" or '
        '"CLIP-L/14x2".')
  tower, size = match.group(1), match.group(2)
  patch, tubelet = int(match.group(3)), int(match.group(4))
  width, depth, mlp_dim, heads = VIT_SIZES[size]
  fields = {'hidden_size': width, 'patches.size': (patch, patch, tubelet)}
  for enc, num_layers in (('spatial_transformer', depth),
                          ('temporal_transformer', TEMPORAL_LAYERS)):
    fields.update({f'{enc}.num_layers': num_layers, f'{enc}.num_heads': heads,
                   f'{enc}.mlp_dim': mlp_dim})
  if tower:
    fields.update(_tower_fields(TOWERS[tower]))
  return fields


def _tower_fields(switches: Dict[str, object]) -> Dict[str, object]:
  """Every TOWER_KEYS entry: the tower's switch, else the declared default."""
  from vivit_adapter import configs  # pylint: disable=g-import-not-at-top
  defaults = configs.base_config().model
  out = {}
  for key in TOWER_KEYS:
    short = key.rpartition('.')[2] if key.startswith('spatial_') else key
    group, _, leaf = key.rpartition('.')
    out[key] = switches.get(short, defaults[group][leaf])
  return out


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
