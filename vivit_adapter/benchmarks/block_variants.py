"""The JAX formulations of one transformer block that `block_compare` times.

Each is a flax module with `layers.EncoderBlock`'s parameter tree (flax's `query`, `key`,
`value`, `out` names and shapes), so one set of parameters serves them all
(`tests/test_block_compare.py` checks outputs and gradients against `EncoderBlock`).
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_adapter.models import attention
from vivit_adapter.models import layers
from vivit_adapter.models import names

_QKV = ('query', 'key', 'value')


def dtype_of(name: str):
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f'--dtype={name}: choose float32 or bfloat16.')
  return jnp.bfloat16 if name == 'bfloat16' else jnp.float32


def jax_nn_core(query, key, value, dtype=None, **unused):
  del dtype, unused
  return jax.nn.dot_product_attention(query, key, value, implementation='xla')


def flax_core(query, key, value, dtype=None, **unused):
  del unused
  return nn.dot_product_attention(query, key, value, dtype=dtype,
                                  force_fp32_for_softmax=True)


class _SelfAttention(nn.Module):
  """Self-attention with flax's parameters; q/k/v fused into one matmul or not."""
  num_heads: int
  fused_qkv: bool
  core: Callable
  dtype: object

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    dense = functools.partial(nn.DenseGeneral, features=(self.num_heads, d // self.num_heads),
                              kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype)
    if self.fused_qkv:
      if self.is_initializing():
        for name in _QKV:
          dense(name=name)(x)
      p = self.variables['params']
      kernel = jnp.concatenate([p[n]['kernel'].reshape(d, d) for n in _QKV], axis=1)
      bias = jnp.concatenate([p[n]['bias'].reshape(d) for n in _QKV])
      qkv = x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)
      qkv = qkv.reshape(x.shape[:-1] + (3, self.num_heads, d // self.num_heads))
      q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    else:
      q, k, v = (dense(name=n)(x) for n in _QKV)
    y = self.core(q, k, v, dtype=self.dtype)
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform(),
                           dtype=self.dtype, name='out')(y)


class VariantBlock(nn.Module):
  """`layers.EncoderBlock`'s structure and parameter names with another attention."""
  mlp_dim: int
  num_heads: int
  fused_qkv: bool
  core: Callable
  dtype: object = None

  @nn.compact
  def __call__(self, inputs):
    x = nn.LayerNorm(dtype=self.dtype, name=names.ATTENTION_NORM)(inputs)
    x = _SelfAttention(self.num_heads, self.fused_qkv, self.core, self.dtype,
                       name=names.ATTENTION)(x) + inputs
    y = nn.LayerNorm(dtype=self.dtype, name=names.MLP_NORM)(x)
    return x + layers.MlpBlock(self.mlp_dim, dtype=self.dtype, name=names.MLP)(y)


def make_block(variant: str, mlp_dim: int, num_heads: int, dtype):
  """The flax module of one JAX variant (block_compare.JAX_VARIANTS)."""
  if variant == 'encoder':
    return layers.EncoderBlock(mlp_dim=mlp_dim, num_heads=num_heads, dtype=dtype)
  cores = {'flax_core': flax_core, 'fused_qkv': attention.heads_first_attention,
           'jax_nn': jax_nn_core}
  if variant not in cores:
    raise ValueError(f'Unknown variant {variant!r}: choose from encoder, {", ".join(cores)}.')
  return VariantBlock(mlp_dim, num_heads, fused_qkv=variant.startswith('fused_qkv'),
                      core=cores[variant], dtype=dtype)


def _loss(module, params, x):
  return jnp.sum(jnp.square(module.apply(params, x).astype(jnp.float32))) * 1e-6


def jax_runner(variant: str, params, x, mlp_dim: int, num_heads: int, dtype) -> Callable:
  """A no-argument callable: one jitted forward + backward (gradients of params and x)."""
  module = make_block(variant, mlp_dim, num_heads, dtype)
  grad = jax.jit(jax.grad(functools.partial(_loss, module), argnums=(0, 1)))
  return lambda: jax.block_until_ready(grad(params, x))
