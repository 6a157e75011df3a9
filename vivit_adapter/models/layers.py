"""Transformer building blocks with scenic's parameter names and semantics.

Pre-norm blocks, LayerNorm epsilon 1e-6 (flax's default), tanh-approximated GELU
(flax's default `nn.gelu`), a learned position embedding added after the CLS token is
prepended, and a final `encoder_norm`. The image towers' switches (models/towers.py:
a LayerNorm before the blocks, another activation or epsilon, layer scale, register
tokens, a per-frame readout) are fields whose defaults are exactly that, so scenic's
model is what a default `Encoder` computes.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_adapter.models import attention
from vivit_adapter.models import names
from vivit_adapter.models import towers

Dtype = Any


class StochasticDepth(nn.Module):
  """Drops the whole residual branch per example with probability `rate`.

  The kept branches are scaled by 1/(1-rate) so the expected value matches eval.
  """
  rate: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate <= 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class MlpBlock(nn.Module):
  """Dense -> GELU -> dropout -> Dense -> dropout (scenic's `MlpBlock`)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  activation: str = towers.DEFAULT_ACTIVATION  # a name from towers.ACTIVATIONS

  @nn.compact
  def __call__(self, x):
    out_dim = x.shape[-1]
    y = nn.Dense(self.mlp_dim, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6), name=names.MLP_IN)(x)
    y = towers.ACTIVATIONS[self.activation](y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
    y = nn.Dense(out_dim, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6), name=names.MLP_OUT)(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)


class EncoderBlock(nn.Module):
  """One pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  droplayer_p: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  query_chunk_size: int = 0  # > 0: attention.query_chunked_attention
  # Image-tower switches (models/towers.py); the defaults are scenic's block.
  layer_norm_epsilon: float = towers.DEFAULT_EPSILON
  mlp_activation: str = towers.DEFAULT_ACTIVATION
  layer_scale: bool = False

  @nn.compact
  def __call__(self, inputs):
    eps = self.layer_norm_epsilon
    x = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name=names.ATTENTION_NORM)(inputs)
    # force_fp32_for_softmax: with bfloat16 activations the softmax's max and sum are
    # still float32 (a no-op for a float32 model).
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        broadcast_dropout=False, dropout_rate=self.attention_dropout_rate,
        deterministic=self.deterministic, force_fp32_for_softmax=True,
        attention_fn=attention.attention_fn(self.query_chunk_size),
        name=names.ATTENTION)(x, x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=self.deterministic)
    if self.layer_scale:
      x = towers.LayerScale(name=names.LAYER_SCALE_ATTENTION)(x)
    x = StochasticDepth(self.droplayer_p, self.deterministic)(x)
    x = x + inputs
    y = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name=names.MLP_NORM)(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, self.deterministic, self.dtype,
                 self.mlp_activation, name=names.MLP)(y)
    if self.layer_scale:
      y = towers.LayerScale(name=names.LAYER_SCALE_MLP)(y)
    y = StochasticDepth(self.droplayer_p, self.deterministic)(y)
    return x + y


class Encoder(nn.Module):
  """Position embedding, `num_layers` blocks and `encoder_norm` (scenic's `Encoder`).

  Stochastic depth ramps linearly from 0 at the first block to
  `stochastic_droplayer_rate` at the last. `remat` recomputes each block's
  activations in the backward pass instead of storing them.

  A call may run a range of blocks, `[start, stop)`: the position embedding comes before
  block 0 (in the call that starts there) and `encoder_norm` after the last block. The
  spatial dial (docs/design.md §2d) calls one instance twice, the frozen blocks below
  the dial and the trainable ones above it, so both halves keep scenic's parameter
  names; the call above the dial is `above=True` (its start may be 0: nothing below the
  dial but the position embedding), and `deterministic` overrides the field for one
  call (the frozen half never drops out).
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_droplayer_rate: float = 0.0
  remat: bool = False
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  query_chunk_size: int = 0  # > 0: attention over blocks of this many queries
  # The image towers' switches (models/towers.py); the default is scenic's encoder.
  tower: towers.TowerOptions = towers.TowerOptions()

  @nn.compact
  def __call__(self, x, *, start: int = 0, stop: Optional[int] = None,
               above: bool = False, deterministic: Optional[bool] = None):
    stop = self.num_layers if stop is None else stop
    if not 0 <= start <= stop <= self.num_layers:
      raise ValueError(f'Encoder blocks [{start}, {stop}) are not within its '
                       f'{self.num_layers} layers.')
    if start and not above:
      raise ValueError(f'Encoder blocks from {start}: only the call above the dial '
                       '(above=True) starts after the position embedding.')
    det = self.deterministic if deterministic is None else deterministic
    return _encode(self, x, start, stop, not above, det)


def _encode(mdl: Encoder, x, start: int, stop: int, posemb: bool, deterministic: bool):
  """The body of `Encoder` over blocks [start, stop), after the position embedding if
  `posemb`; called inside its compact scope."""
  if x.ndim != 3:
    raise ValueError(f'Encoder expects (batch, tokens, width), got shape {x.shape}.')
  tower = mdl.tower
  if posemb:
    x = AddPositionEmbs(name=names.POSEMB_MODULE)(x)
    x = towers.insert_registers(mdl, x)
    if tower.pre_norm:
      x = nn.LayerNorm(epsilon=tower.layer_norm_epsilon, dtype=mdl.dtype,
                       name=names.PRE_NORM)(x)
    x = nn.Dropout(mdl.dropout_rate)(x, deterministic=deterministic)
  # nn.remat keeps flax's default prevent_cse=True. The blocks are unrolled in a Python
  # loop, and outside a scan XLA's common-subexpression elimination could merge the
  # recomputation with the forward pass and store the activations after all. (False is
  # safe only inside a scan body, as on the chunked spatial path; one setting serves both.)
  block_cls = nn.remat(EncoderBlock) if mdl.remat else EncoderBlock
  for i in range(start, stop):
    droplayer_p = i / max(mdl.num_layers - 1, 1) * mdl.stochastic_droplayer_rate
    x = block_cls(
        mlp_dim=mdl.mlp_dim, num_heads=mdl.num_heads,
        dropout_rate=mdl.dropout_rate,
        attention_dropout_rate=mdl.attention_dropout_rate,
        droplayer_p=droplayer_p, deterministic=deterministic,
        dtype=mdl.dtype, query_chunk_size=mdl.query_chunk_size,
        layer_norm_epsilon=tower.layer_norm_epsilon, mlp_activation=tower.mlp_activation,
        layer_scale=tower.layer_scale, name=names.encoder_block(i))(x)
  if stop < mdl.num_layers:
    return x
  x = nn.LayerNorm(epsilon=tower.layer_norm_epsilon, dtype=mdl.dtype,
                   name=names.ENCODER_NORM)(x)
  return towers.frame_readout(mdl, x, MlpBlock)


class AddPositionEmbs(nn.Module):
  """Adds a learned (1, tokens, width) position embedding named `pos_embedding`."""

  @nn.compact
  def __call__(self, x):
    pe = self.param(names.POSEMB_PARAM, nn.initializers.normal(stddev=0.02),
                    (1,) + x.shape[1:], jnp.float32)
    return x + pe.astype(x.dtype)
