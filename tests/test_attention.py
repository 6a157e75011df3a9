"""vivit_adapter.models.attention: heads-first and query-chunked attention equal flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.helpers import perturbed_params, random_video, run
from vivit_adapter import configs
from vivit_adapter.models import attention, create_model


def qkv(length=13, batch=2, heads=3, depth=4, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return [jax.random.normal(k, (batch, length, heads, depth)) for k in keys]


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_heads_first_attention_equals_flax_values_and_gradients(dtype):
  q, k, v = qkv(length=11)
  kwargs = dict(dtype=dtype, force_fp32_for_softmax=True)
  ours = lambda q, k, v: attention.heads_first_attention(q, k, v, **kwargs)
  flax_fn = lambda q, k, v: nn.dot_product_attention(q, k, v, **kwargs)
  tol = 1e-6 if dtype == jnp.float32 else 1e-2
  got, want = ours(q, k, v), flax_fn(q, k, v)
  assert got.dtype == want.dtype and got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=tol, atol=tol)
  w = jax.random.normal(jax.random.PRNGKey(5), q.shape)
  loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a).astype(jnp.float32)) * w)
  grads = jax.grad(loss(ours), argnums=(0, 1, 2))(q, k, v)
  want_grads = jax.grad(loss(flax_fn), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(grads, want_grads):
    np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)


def test_heads_first_attention_leaves_dropout_and_masks_to_flax():
  """Attention dropout in training, a mask or a bias: flax's own function, bit for bit
  (its dropout mask's draw included)."""
  q, k, v = qkv(length=7)
  rng = jax.random.PRNGKey(3)
  mask = jax.random.bernoulli(jax.random.PRNGKey(4), 0.7, (2, 3, 7, 7))
  for kwargs in (dict(dropout_rate=0.3, deterministic=False, dropout_rng=rng),
                 dict(mask=mask), dict(bias=jnp.where(mask, 0.0, -1e9))):
    np.testing.assert_array_equal(attention.heads_first_attention(q, k, v, **kwargs),
                                  nn.dot_product_attention(q, k, v, **kwargs))
  # Dropout at evaluation (deterministic) is no dropout: the heads-first path.
  np.testing.assert_allclose(
      attention.heads_first_attention(q, k, v, dropout_rate=0.3, deterministic=True),
      nn.dot_product_attention(q, k, v), rtol=1e-6, atol=1e-6)


def test_encoders_attend_heads_first():
  assert attention.attention_fn(0) is attention.heads_first_attention
  assert attention.attention_fn(8).func is attention.query_chunked_attention


@pytest.mark.parametrize('chunk', [1, 4, 5, 13, 20])  # 13 queries: padded, exact, one block
def test_query_chunked_attention_equals_plain_values_and_gradients(chunk):
  q, k, v = qkv()
  chunked = lambda q, k, v: attention.query_chunked_attention(q, k, v, chunk_size=chunk)
  np.testing.assert_allclose(chunked(q, k, v), nn.dot_product_attention(q, k, v),
                             rtol=1e-6, atol=1e-6)
  # Gradients with respect to queries, keys and values, of a non-trivial function.
  w = jax.random.normal(jax.random.PRNGKey(5), q.shape)
  loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)) * w)
  got = jax.grad(loss(chunked), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_query_chunked_attention_keeps_no_full_logits():
  # 512 queries x 512 keys x 4 heads in float32 = 4 MiB of logits per example; blocks
  # of 64 queries never hold more than an eighth of them.
  q, k, v = qkv(length=512, batch=1, heads=4, depth=8)

  def temp_bytes(fn):
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) ** 2), argnums=(0, 1, 2)))
    return grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

  plain = temp_bytes(nn.dot_product_attention)
  chunked = temp_bytes(lambda q, k, v: attention.query_chunked_attention(
      q, k, v, chunk_size=64))
  assert plain > 4 * 2**20 and chunked < plain / 4, (plain, chunked)


def test_temporal_options_give_the_same_model():
  video = random_video()
  base = create_model(helpers.tiny_model(configs.base_config().model), 5)
  options = create_model(helpers.tiny_model(
      configs.base_config().model, temporal_remat=True, temporal_query_chunk_size=3), 5)
  params = perturbed_params(base, video)
  np.testing.assert_allclose(run(options, params, video), run(base, params, video),
                             rtol=1e-6, atol=1e-6)

  def grads(model):
    loss = lambda p: jnp.sum(model.apply({'params': p}, video) ** 2)
    return jax.jit(jax.grad(loss))(params)

  for a, b in zip(jax.tree.leaves(grads(options)), jax.tree.leaves(grads(base))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
