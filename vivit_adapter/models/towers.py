"""The switches that make the spatial encoder one of the ecosystem's image towers.

CLIP / OpenCLIP, SigLIP and DINOv2 (docs/design.md §2e) differ from scenic's ViT in a
handful of places; each is an option whose default is scenic's model, so a default
`TowerOptions()` changes nothing and scenic parity never moves:

    pre_norm            LayerNorm after the position embedding, before the blocks (CLIP's ln_pre)
    mlp_activation      'gelu_tanh' (scenic, SigLIP), 'gelu' (DINOv2, OpenCLIP), 'quick_gelu' (OpenAI CLIP)
    layer_norm_epsilon  1e-6 (scenic, SigLIP, DINOv2); 1e-5 (CLIP)
    patch_bias          the tubelet embedding's bias (CLIP has none)
    layer_scale         a learned per-channel scale on each residual branch (DINOv2)
    num_registers       learned tokens inserted after the class token (DINOv2 with registers)
    pooling             the per-frame vector: '' as config.model.classifier (today's model),
                        'token' (class token), 'mean' (mean of the patch tokens, no class
                        token) or 'map' (attention pooling, SigLIP's head, no class token)
    adapter_tokens      beside that vector, the tokens an adapter reads: 'patches', or
                        'all' (registers too; the class token when it is not the vector)

With a `pooling`, the spatial encoder's output per frame is laid out as
[per-frame vector, tokens the adapter reads]: row 0 is what every consumer pools, so
the adapters, the feature cache and the temporal encoder read it unchanged.
"""

import functools
from typing import Callable, Dict, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_adapter.models import names

DEFAULT_ACTIVATION = 'gelu_tanh'
DEFAULT_EPSILON = 1e-6
ACTIVATIONS: Dict[str, Callable] = {
    'gelu_tanh': functools.partial(nn.gelu, approximate=True),  # flax's nn.gelu
    'gelu': functools.partial(nn.gelu, approximate=False),
    'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
}
POOLINGS = ('', 'token', 'mean', 'map')
ADAPTER_TOKENS = ('patches', 'all')


class TowerOptions(NamedTuple):
  """The spatial encoder's image-tower switches (see the module docstring)."""
  pre_norm: bool = False
  mlp_activation: str = DEFAULT_ACTIVATION
  layer_norm_epsilon: float = DEFAULT_EPSILON
  patch_bias: bool = True
  layer_scale: bool = False
  num_registers: int = 0
  pooling: str = ''
  adapter_tokens: str = 'patches'


def from_config(model_config) -> TowerOptions:
  """`config.model` -> TowerOptions (config.model.spatial_transformer and patches.bias)."""
  enc = model_config.spatial_transformer
  return TowerOptions(
      pre_norm=enc.pre_norm, mlp_activation=enc.mlp_activation,
      layer_norm_epsilon=enc.layer_norm_epsilon, patch_bias=model_config.patches.bias,
      layer_scale=enc.layer_scale, num_registers=enc.num_registers, pooling=enc.pooling,
      adapter_tokens=enc.adapter_tokens)


def check_config(model_config) -> None:
  """One-line errors naming the config.model key, for the values a choice list cannot
  check (models.check_choices checks the named ones: ACTIVATIONS, POOLINGS, ADAPTER_TOKENS)."""
  enc = model_config.spatial_transformer
  key = 'config.model.spatial_transformer'
  if not enc.layer_norm_epsilon > 0:
    raise ValueError(f'{key}.layer_norm_epsilon={enc.layer_norm_epsilon} must be positive.')
  if enc.num_registers < 0:
    raise ValueError(f'{key}.num_registers={enc.num_registers} must be >= 0.')
  if enc.num_registers and not enc.pooling:
    raise ValueError(f'{key}.num_registers={enc.num_registers} needs {key}.pooling set '
                     "('token', 'mean' or 'map'), which says what a frame's vector is.")


def frame_classifier(tower: TowerOptions, classifier: str) -> str:
  """How the spatial output of a frame is pooled: row 0 when a readout laid it out."""
  return 'token' if tower.pooling else classifier


def spatial_has_cls(tower: TowerOptions, classifier: str) -> bool:
  """Whether the spatial encoder prepends a class token to each frame."""
  return tower.pooling == 'token' if tower.pooling else classifier == 'token'


class LayerScale(nn.Module):
  """x * scale, a learned per-channel scale of a residual branch (DINOv2's LayerScale)."""

  @nn.compact
  def __call__(self, x):
    scale = self.param(names.LAYER_SCALE_PARAM, nn.initializers.ones, (x.shape[-1],),
                       jnp.float32)
    return x * scale.astype(x.dtype)


class MAPHead(nn.Module):
  """Multihead attention pooling: a learned probe attends over a frame's tokens.

  SigLIP's (and big_vision's) head: probe -> attention -> x + MLP(LayerNorm(x)). The
  MLP is the encoder's own block, handed in (`mlp_block`: layers.MlpBlock), so that this
  module, which layers imports, does not import layers back.
  """
  num_heads: int
  mlp_dim: int
  layer_norm_epsilon: float = DEFAULT_EPSILON
  mlp_activation: str = DEFAULT_ACTIVATION
  dtype: jnp.dtype = jnp.float32
  mlp_block: Callable[..., nn.Module] = None

  @nn.compact
  def __call__(self, x):
    b, _, d = x.shape
    probe = self.param(names.MAP_PROBE, nn.initializers.xavier_uniform(), (1, 1, d),
                       jnp.float32)
    probe = jnp.broadcast_to(probe.astype(x.dtype), (b, 1, d))
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, force_fp32_for_softmax=True,
        kernel_init=nn.initializers.xavier_uniform(), name=names.ATTENTION)(probe, x)
    y = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                     name=names.ATTENTION_NORM)(x)
    y = self.mlp_block(self.mlp_dim, dtype=self.dtype, activation=self.mlp_activation,
                       name=names.MLP)(y)
    return (x + y)[:, 0]


def insert_registers(mdl, x):
  """Inserts `num_registers` learned tokens after the class token (after the position
  embedding was added: registers have no position), as DINOv2 with registers does."""
  count = mdl.tower.num_registers
  if not count:
    return x
  regs = mdl.param(names.REGISTERS, nn.initializers.normal(stddev=1e-6),
                   (1, count, x.shape[-1]), jnp.float32)
  regs = jnp.broadcast_to(regs.astype(x.dtype), (x.shape[0], count, x.shape[-1]))
  cls = int(mdl.tower.pooling == 'token')
  return jnp.concatenate([x[:, :cls], regs, x[:, cls:]], axis=1)


def frame_readout(mdl, x, mlp_block: Callable[..., nn.Module]):
  """The encoder's output per frame as [vector, tokens the adapter reads].

  `mdl` is the spatial `layers.Encoder` (its compact scope owns the MAP head's
  parameters); `mlp_block` its MLP block, for the MAP head. Without a `pooling` the output is returned unchanged (today's model).
  """
  tower = mdl.tower
  if not tower.pooling:
    return x
  has_cls = tower.pooling == 'token'
  patches = x[:, int(has_cls) + tower.num_registers:]
  if tower.pooling == 'token':
    vector = x[:, 0]
  elif tower.pooling == 'mean':
    vector = jnp.mean(patches, axis=1)
  else:
    vector = MAPHead(mdl.num_heads, mdl.mlp_dim, tower.layer_norm_epsilon,
                     tower.mlp_activation, mdl.dtype, mlp_block, name=names.MAP_HEAD)(x)
  tokens = patches if tower.adapter_tokens == 'patches' else x[:, int(has_cls):]
  return jnp.concatenate([vector[:, None], tokens], axis=1)
