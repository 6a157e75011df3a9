"""Attention functions for `nn.MultiHeadDotProductAttention(attention_fn=...)`.

`heads_first_attention` is flax's `dot_product_attention` with the heads axis moved
before the tokens first, so that both einsums are batched matmuls over leading axes.
Same function; on XLA:CPU the block's forward + backward is 4% (ViViT-B, 197 tokens) to
20% (ViViT-S, 50 tokens) faster (docs/results.md section 2, `benchmarks.block_compare`,
variant `bhld`). It is every encoder's attention.

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


def heads_first_attention(query, key, value, bias=None, mask=None, broadcast_dropout=True,
                          dropout_rng=None, dropout_rate: float = 0.0,
                          deterministic: bool = True, dtype=None, precision=None,
                          force_fp32_for_softmax: bool = False, **unused):
  """flax's `dot_product_attention` computed over (..., heads, length, depth).

  query (..., Lq, heads, depth), key and value (..., Lk, heads, depth), as flax's. The
  cases this project's encoders never use (a bias or mask, attention dropout in
  training) are handed to flax's own function, so that their semantics (the dropout
  mask's draw included) stay flax's exactly.
  """
  if (bias is not None or mask is not None or unused or
      (dropout_rate > 0.0 and not deterministic)):
    return nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, broadcast_dropout=broadcast_dropout,
        dropout_rng=dropout_rng, dropout_rate=dropout_rate, deterministic=deterministic,
        dtype=dtype, precision=precision, force_fp32_for_softmax=force_fp32_for_softmax,
        **unused)
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  dtype = query.dtype
  query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
  q, k, v = (jnp.swapaxes(t, -3, -2) for t in (query, key, value))  # (..., heads, L, d)
  logits = jnp.einsum('...hqd,...hkd->...hqk', q, k, precision=precision)
  # As flax: a forced float32 softmax stays float32 into the weighted sum.
  if force_fp32_for_softmax and dtype != jnp.float32:
    weights = jax.nn.softmax(logits.astype(jnp.float32))
  else:
    weights = jax.nn.softmax(logits).astype(dtype)
  out = jnp.einsum('...hqk,...hkd->...hqd', weights, v, precision=precision)
  return jnp.swapaxes(out, -3, -2)


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
    return heads_first_attention(
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
    return heads_first_attention(
        q, key, value, dropout_rng=rng, dropout_rate=dropout_rate,
        broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
        force_fp32_for_softmax=force_fp32_for_softmax)

  _, out = jax.lax.scan(lambda c, x: (c, attend(*x)), None,
                        (blocks, jnp.arange(num_chunks)))
  out = jnp.moveaxis(out, 0, -4).reshape(lead + (-1,) + query.shape[-2:])
  return out[..., :num_queries, :, :]


def attention_fn(query_chunk_size: int):
  """The `attention_fn` for an encoder: whole (heads first), or query-chunked."""
  if query_chunk_size <= 0:
    return heads_first_attention
  return functools.partial(query_chunked_attention, chunk_size=query_chunk_size)

