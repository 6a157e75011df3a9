"""Attention functions for `nn.MultiHeadDotProductAttention(attention_fn=...)`.

`query_chunked_attention` computes exactly what flax's `dot_product_attention` computes,
a block of queries at a time, each block rematerialised: the (heads, queries, keys)
logits and softmax never exist for all queries at once, in the forward pass or in the
backward pass. That is what lets the temporal encoder attend over thousands of tokens
(2049 at 4096 frames: 0.8 GB of bfloat16 logits per layer at batch 8 and 12 heads,
twice that for the float32 softmax, kept per layer for the backward pass when plain).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def query_chunked_attention(query, key, value, *, chunk_size: int, dropout_rng=None,
                            dropout_rate: float = 0.0, broadcast_dropout: bool = True,
                            deterministic: bool = True, dtype=None,
                            force_fp32_for_softmax: bool = False, **unused):
  """flax's `dot_product_attention` over blocks of `chunk_size` queries (a scan).

  query (..., Lq, heads, depth), key and value (..., Lk, heads, depth). Queries are
  independent of each other, so the result equals plain attention up to float
  reassociation; queries are zero-padded to a multiple of `chunk_size` and the padding
  cut off. Attention dropout draws its mask per block from `dropout_rng` folded with the
  block index (the same distribution, not the same mask as plain attention).
  """
  del unused  # masks, bias and precision: not used by this project's encoders
  num_queries = query.shape[-3]
  if num_queries <= chunk_size:
    return nn.dot_product_attention(
        query, key, value, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
        broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
        force_fp32_for_softmax=force_fp32_for_softmax)
  num_chunks = -(-num_queries // chunk_size)
  pad = [(0, 0)] * query.ndim
  pad[-3] = (0, num_chunks * chunk_size - num_queries)
  lead = query.shape[:-3]
  blocks = jnp.pad(query, pad).reshape(lead + (num_chunks, chunk_size) + query.shape[-2:])
  blocks = jnp.moveaxis(blocks, -4, 0)  # (chunks, ..., chunk, heads, depth)

  @functools.partial(jax.checkpoint, prevent_cse=False)  # safe inside a scan body
  def attend(q, i):
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, i)
    return nn.dot_product_attention(
        q, key, value, dropout_rng=rng, dropout_rate=dropout_rate,
        broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
        force_fp32_for_softmax=force_fp32_for_softmax)

  _, out = jax.lax.scan(lambda c, x: (c, attend(*x)), None,
                        (blocks, jnp.arange(num_chunks)))
  out = jnp.moveaxis(out, 0, -4).reshape(lead + (-1,) + query.shape[-2:])
  return out[..., :num_queries, :, :]


def attention_fn(query_chunk_size: int):
  """The `attention_fn` for an encoder: plain flax attention, or query-chunked."""
  if query_chunk_size <= 0:
    return nn.dot_product_attention
  return functools.partial(query_chunked_attention, chunk_size=query_chunk_size)

