"""Models: the ViViT factorised encoder, its adapter, named variants."""


import jax.numpy as jnp
import ml_collections

from vivit_adapter import configs
from vivit_adapter.models import towers
from vivit_adapter.models import variants
from vivit_adapter.models.adapter import ADAPTER_TYPES
from vivit_adapter.models.inputs import NORMALIZATIONS, normalize
from vivit_adapter.models.vivit import FROZEN_PART, HEAD_INITS, PARTS, TRAINABLE_PART, WHOLE
from vivit_adapter.models.vivit import AdapterSpec, EncoderSpec, ViViTFactorisedEncoder

CLASSIFIERS = ('token', 'gap')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Config keys whose value is one of this package's names -> those names (check_choices).
CONFIG_CHOICES = {
    'model.classifier': CLASSIFIERS,
    'model.adapter.type': ADAPTER_TYPES,
    'model.dtype': tuple(DTYPES),
    'model.head_kernel_init': tuple(HEAD_INITS),
    'model.spatial_transformer.mlp_activation': tuple(towers.ACTIVATIONS),
    'model.spatial_transformer.pooling': towers.POOLINGS,
    'model.spatial_transformer.adapter_tokens': towers.ADAPTER_TOKENS,
    'dataset.normalization': NORMALIZATIONS,
}


def check_choices(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key when a model option is not one this package has.

  Each set is its implementation's constant, so a choice added where it is implemented
  is accepted. Run by the start-up check (train_lib.startup.check_config).
  """
  configs.check_choices(config, CONFIG_CHOICES)


def check_sizes(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the keys when config.model's sizes cannot work together
  (or with the clip length, config.dataset.num_frames)."""
  if config.model.recompute_frozen and not (config.model.freeze_spatial and
                                            config.model.spatial_chunk_size > 0):
    raise ValueError('config.model.recompute_frozen=True needs config.model.freeze_spatial'
                     '=True and config.model.spatial_chunk_size > 0 (it recomputes the '
                     'frozen chunks).')
  if config.model.variant:
    variants.parse_variant(config.model.variant)
  towers.check_config(config.model)
  check_dial(config.model)
  patch_t = config.model.patches.size[2]
  if config.dataset.num_frames % patch_t:
    raise ValueError(
        f'config.dataset.num_frames={config.dataset.num_frames} must be a multiple of the '
        f'tubelet length config.model.patches.size[2]={patch_t}.')


def check_dial(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key when the spatial dial (trainable_spatial_layers)
  cannot apply: more layers than the spatial encoder has, or no frozen encoder to split."""
  k, layers = model_config.trainable_spatial_layers, model_config.spatial_transformer.num_layers
  if not 0 <= k <= layers:
    raise ValueError(f'config.model.trainable_spatial_layers={k} must be in [0, {layers}] '
                     '(config.model.spatial_transformer.num_layers).')
  if k and not model_config.freeze_spatial:
    raise ValueError(f'config.model.trainable_spatial_layers={k} needs config.model.'
                     'freeze_spatial=True (without it every spatial layer trains).')


def create_model(model_config: ml_collections.ConfigDict, num_classes: int,
                 normalization: str = '') -> ViViTFactorisedEncoder:
  """Builds the ViViT factorised encoder described by `config.model`.

  Reads the size fields only: a variant was written into them when the config was
  built (variants.apply_variant), and `check_choices` has checked the named choices.
  `module.apply({'params': params}, video, train=False)` maps (B,T,H,W,3) video to
  (B, num_classes) logits. With `normalization` (config.dataset.normalization) the
  video is pixels in [0, 255], uint8 as the input pipelines yield it, normalised on the
  device (models/inputs.py); without it, float video already normalised.
  """
  cfg = model_config
  if num_classes <= 0:
    raise ValueError(f'num_classes must be positive, got {num_classes}.')
  def spec(enc):
    return EncoderSpec(enc.num_layers, enc.num_heads, enc.mlp_dim)
  return ViViTFactorisedEncoder(
      num_classes=num_classes,
      hidden_size=cfg.hidden_size,
      patches=tuple(int(p) for p in cfg.patches.size),
      spatial=spec(cfg.spatial_transformer),
      temporal=spec(cfg.temporal_transformer),
      classifier=cfg.classifier,
      dropout_rate=cfg.dropout_rate,
      attention_dropout_rate=cfg.attention_dropout_rate,
      stochastic_droplayer_rate=cfg.stochastic_droplayer_rate,
      adapter=AdapterSpec(cfg.adapter.type, cfg.adapter.hidden_size,
                          cfg.adapter.num_heads, cfg.adapter.mlp_dim),
      freeze_spatial=cfg.freeze_spatial,
      trainable_spatial_layers=cfg.trainable_spatial_layers,
      spatial_chunk_size=cfg.spatial_chunk_size,
      remat=cfg.remat,
      temporal_remat=cfg.temporal_remat,
      temporal_query_chunk_size=cfg.temporal_query_chunk_size,
      recompute_frozen=cfg.recompute_frozen,
      dtype=DTYPES[cfg.dtype],
      head_kernel_init=cfg.head_kernel_init,
      normalization=normalization,
      spatial_tower=towers.from_config(cfg))


__all__ = ['create_model', 'check_dial', 'ViViTFactorisedEncoder', 'EncoderSpec', 'AdapterSpec',
           'ADAPTER_TYPES', 'CLASSIFIERS', 'DTYPES', 'HEAD_INITS', 'NORMALIZATIONS',
           'normalize', 'towers', 'variants', 'CONFIG_CHOICES', 'check_choices', 'check_sizes',
           'WHOLE', 'FROZEN_PART', 'TRAINABLE_PART', 'PARTS']
