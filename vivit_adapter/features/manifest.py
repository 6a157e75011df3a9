"""What a feature cache was made from, and the check that stage 2 may use it.

A cache is valid only for the exact frozen parameters and the settings that shape the
frozen output: the model's tubelet embedding and spatial encoder, what the adapter
consumes (every token or the pooled vector), the activation dtype, and every dataset
setting that decides which pixels a view holds. The manifest records all of them plus
a hash of the frozen parameters; `check` compares a run's expectation with a cache's
manifest and fails in one line naming each difference and the rebuilding command.
"""

import hashlib
from typing import Dict, List, Mapping

import numpy as np

from data_pipelines import feature_cache
from vivit_adapter.models import adapter as adapter_lib

# config.model keys whose values change the frozen output. trainable_spatial_layers (the
# dial, docs/design.md §2d) is the layer the cache was taken at: after layer L-k.
MODEL_KEYS = ('hidden_size', 'patches.size', 'spatial_transformer.num_layers',
              'spatial_transformer.num_heads', 'spatial_transformer.mlp_dim', 'classifier',
              'dtype', 'trainable_spatial_layers')
# Values a manifest written before a key existed holds implicitly: every cache made
# before the dial was taken at the top of the spatial encoder.
_ABSENT_MEANS = {'trainable_spatial_layers': 0}
# The image-tower switches (models/towers.py) change the frozen output too. They are
# recorded only where they differ from their defaults, so a cache made before they
# existed (all of them at their defaults) still matches a run of today's model.
TOWER_KEYS = ('patches.bias', 'spatial_transformer.pre_norm',
              'spatial_transformer.mlp_activation', 'spatial_transformer.layer_norm_epsilon',
              'spatial_transformer.layer_scale', 'spatial_transformer.num_registers',
              'spatial_transformer.pooling', 'spatial_transformer.adapter_tokens')
# config.dataset keys that decide the pixels of a view (train augmentation included).
DATASET_KEYS = ('name', 'base_dir', 'tfds_name', 'tfds_data_dir', 'train_table',
                'eval_table', 'test_table', 'tfds_train_split', 'tfds_eval_split',
                'tfds_test_split', 'num_frames', 'stride', 'min_resize', 'crop_size',
                'min_scale', 'max_scale', 'flip', 'color_jitter', 'randaugment_layers',
                'randaugment_magnitude', 'normalization', 'num_test_clips', 'num_test_crops')
# What the adapter consumes: every token of a temporal index, or its pooled vector.
TOKENS, POOLED = 'tokens', 'pooled'


def feature_kind(adapter_type: str, trainable_spatial_layers: int = 0) -> str:
  """What the model's frozen part returns for this adapter (models/adapter.py); below
  the dial, every token, which the trainable spatial layers attend over."""
  if trainable_spatial_layers or adapter_lib.reads_tokens(adapter_type):
    return TOKENS
  return POOLED


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return list(config) if isinstance(config, tuple) else config


def frozen_params_hash(params: Mapping, frozen: List[str]) -> str:
  """sha256 over the frozen subtrees: names, dtypes, shapes and bytes, in name order."""
  digest = hashlib.sha256()
  flat = {}
  for key in frozen:  # a top-level name, or a path such as 'SpatialTransformer/encoderblock_0'
    tree = params
    for name in key.split('/'):
      tree = tree[name]
    _flatten(tree, key, flat)
  for name in sorted(flat):
    value = np.ascontiguousarray(np.asarray(flat[name]))
    digest.update(f'{name}|{value.dtype}|{value.shape}|'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _flatten(tree, prefix: str, out: Dict) -> None:
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      _flatten(v, f'{prefix}/{k}', out)
  else:
    out[prefix] = tree


def expected(config, *, params_hash: str, kind: str) -> Dict:
  """The fields of a manifest that a run with `config` and these parameters requires."""
  return {
      'format_version': feature_cache.FORMAT_VERSION,
      'frozen_params_sha256': params_hash,
      'kind': kind,
      'model': {**{k: _get(config.model, k) for k in MODEL_KEYS}, **_tower_fields(config)},
      'dataset': {k: _get(config.dataset, k) for k in DATASET_KEYS},
  }


def with_implicit_keys(manifest: Dict) -> Dict:
  """`manifest` with the model keys an older manifest holds implicitly, made explicit."""
  return dict(manifest, model={**_ABSENT_MEANS, **manifest.get('model', {})})


def _tower_fields(config) -> Dict:
  from vivit_adapter import configs  # pylint: disable=g-import-not-at-top
  default = configs.base_config().model
  return {k: _get(config.model, k) for k in TOWER_KEYS
          if _get(config.model, k) != _get(default, k)}


def compatible_kind(cache_kind: str, adapter_type: str) -> bool:
  """Pooled vectors can feed 'mlp'/'none'; the attention adapter needs every token."""
  return cache_kind == TOKENS or feature_kind(adapter_type) == POOLED


def differences(want: Dict, have: Dict, prefix: str = '') -> List[str]:
  """'key: cache X, this run Y' for every field of `want` that `have` does not match."""
  out = []
  for key, value in want.items():
    got = have.get(key, '<absent>') if isinstance(have, Mapping) else '<absent>'
    if isinstance(value, Mapping) and isinstance(got, Mapping):
      out += differences(value, got, f'{prefix}{key}.')
    elif _norm(got) != _norm(value):
      out.append(f'{prefix}{key}: cache {_short(got)}, this run {_short(value)}')
  return out


def _norm(value):
  return list(value) if isinstance(value, tuple) else value


def _short(value) -> str:
  text = repr(value)
  return text[:19] + '...' if len(text) > 22 and isinstance(value, str) and len(value) == 64 else text


def check(cache_dir: str, manifest: Dict, want: Dict, adapter_type: str,
          rebuild: str) -> None:
  """Raises feature_cache.CacheError when the cache was made for another run.

  `rebuild` is the command that makes a cache for this run, quoted in the error.
  """
  problems = differences({k: v for k, v in want.items() if k != 'kind'},
                         with_implicit_keys(manifest))
  if not compatible_kind(manifest.get('kind'), adapter_type):
    problems.append(f"kind: cache {manifest.get('kind')!r} (pooled vectors), this run's "
                    f"adapter {adapter_type!r} needs {TOKENS!r}")
  if problems:
    raise feature_cache.CacheError(
        f'Feature cache {cache_dir} does not match this run ({"; ".join(problems)}). '
        f'Make one for this run: {rebuild}')




def rebuild_command(config) -> str:
  """The extraction command for a run with `config` (its experiment file and overrides)."""
  name = config.experiment_name
  experiment = f'experiments/{name}.py' if name else 'EXPERIMENT.py'
  return (f'python -m vivit_adapter.extract_features --config={experiment} '
          '[the same --config.* overrides as this run] --cache_dir=NEW_DIR, then '
          '--config.feature_cache.dir=NEW_DIR')
