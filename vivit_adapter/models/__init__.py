"""Models: the ViViT factorised encoder, its adapter, named variants."""

import jax.numpy as jnp
import ml_collections

from vivit_adapter.models import towers
from vivit_adapter.models import variants
from vivit_adapter.models.adapter import ADAPTER_TYPES
from vivit_adapter.models.inputs import NORMALIZATIONS, normalize
from vivit_adapter.models.vivit import FROZEN_PART, HEAD_INITS, PARTS, TRAINABLE_PART, WHOLE
from vivit_adapter.models.vivit import AdapterSpec, EncoderSpec, ViViTFactorisedEncoder

CLASSIFIERS = ('token', 'gap')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create_model(model_config: ml_collections.ConfigDict, num_classes: int,
                 normalization: str = '') -> ViViTFactorisedEncoder:
  """Builds the ViViT factorised encoder described by `config.model`.

  Reads the size fields only: a variant was written into them when the config was
  built (variants.apply_variant), and configs.validate has checked the named choices.
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
      spatial_chunk_size=cfg.spatial_chunk_size,
      remat=cfg.remat,
      temporal_remat=cfg.temporal_remat,
      temporal_query_chunk_size=cfg.temporal_query_chunk_size,
      recompute_frozen=cfg.recompute_frozen,
      dtype=DTYPES[cfg.dtype],
      head_kernel_init=cfg.head_kernel_init,
      normalization=normalization,
      spatial_tower=towers.from_config(cfg))


__all__ = ['create_model', 'ViViTFactorisedEncoder', 'EncoderSpec', 'AdapterSpec',
           'ADAPTER_TYPES', 'CLASSIFIERS', 'DTYPES', 'HEAD_INITS', 'NORMALIZATIONS',
           'normalize', 'towers', 'variants',
           'WHOLE', 'FROZEN_PART', 'TRAINABLE_PART', 'PARTS']
