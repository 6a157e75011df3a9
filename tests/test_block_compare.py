"""Tests for vivit_adapter.benchmarks.block_compare.

Every JAX formulation the benchmark times must compute the project's block: the same
parameter tree, the same outputs and the same gradients as `layers.EncoderBlock`. The
torch block must be the same function too, or its time would not be comparable.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vivit_adapter.benchmarks import block_compare
from vivit_adapter.benchmarks import block_variants
from vivit_adapter.models import layers

WIDTH, HEADS, MLP, TOKENS, SEQS = 32, 4, 64, 9, 3


@pytest.fixture(scope='module')
def block():
  x = jax.random.normal(jax.random.PRNGKey(0), (SEQS, TOKENS, WIDTH))
  module = layers.EncoderBlock(mlp_dim=MLP, num_heads=HEADS)
  params = module.init(jax.random.PRNGKey(1), x)
  # Random biases and norm parameters too, so that every parameter matters.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                     for l, k in zip(leaves, keys)])
  return x, params


def _loss_and_grads(variant, x, params):
  module = block_variants.make_block(variant, MLP, HEADS, jnp.float32)
  loss = lambda p, x: jnp.sum(jnp.square(module.apply(p, x)))
  return module.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)


@pytest.mark.parametrize('variant', [v for v in block_compare.JAX_VARIANTS if v != 'encoder'])
def test_each_jax_variant_is_the_projects_block(block, variant):
  x, params = block
  variant_params = block_variants.make_block(variant, MLP, HEADS, jnp.float32).init(
      jax.random.PRNGKey(1), x)
  assert (jax.tree.map(jnp.shape, variant_params) == jax.tree.map(jnp.shape, params))
  want_out, want_grads = _loss_and_grads('encoder', x, params)
  out, grads = _loss_and_grads(variant, x, params)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_qkv_kernels_are_the_three_projections(block):
  """With q's kernel zeroed, the fused block's output moves as the plain one's does."""
  x, params = block
  p = jax.tree.map(lambda a: a, params)
  attn = dict(p['params']['MultiHeadDotProductAttention_0'])
  attn['query'] = jax.tree.map(jnp.zeros_like, attn['query'])
  p = {'params': dict(p['params'], MultiHeadDotProductAttention_0=attn)}
  plain, _ = _loss_and_grads('encoder', x, p)
  fused, _ = _loss_and_grads('fused_qkv', x, p)
  original, _ = _loss_and_grads('fused_qkv', x, params)
  np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(fused) - np.asarray(original)).max() > 1e-3


def test_torch_block_computes_the_same_function(block):
  x, params = block
  t = block_compare._torch_block(WIDTH, HEADS, MLP)
  p = jax.tree.map(lambda a: np.array(a, np.float32), params)['params']
  attn, mlp = p['MultiHeadDotProductAttention_0'], p['MlpBlock_0']
  with torch.no_grad():
    t.norm1.weight.copy_(torch.from_numpy(p['LayerNorm_0']['scale']))
    t.norm1.bias.copy_(torch.from_numpy(p['LayerNorm_0']['bias']))
    t.norm2.weight.copy_(torch.from_numpy(p['LayerNorm_1']['scale']))
    t.norm2.bias.copy_(torch.from_numpy(p['LayerNorm_1']['bias']))
    t.qkv.weight.copy_(torch.from_numpy(np.concatenate(
        [attn[n]['kernel'].reshape(WIDTH, WIDTH) for n in ('query', 'key', 'value')], 1).T))
    t.qkv.bias.copy_(torch.from_numpy(np.concatenate(
        [attn[n]['bias'].reshape(WIDTH) for n in ('query', 'key', 'value')])))
    t.out.weight.copy_(torch.from_numpy(attn['out']['kernel'].reshape(WIDTH, WIDTH).T))
    t.out.bias.copy_(torch.from_numpy(attn['out']['bias']))
    t.mlp_in.weight.copy_(torch.from_numpy(mlp['Dense_0']['kernel'].T))
    t.mlp_in.bias.copy_(torch.from_numpy(mlp['Dense_0']['bias']))
    t.mlp_out.weight.copy_(torch.from_numpy(mlp['Dense_1']['kernel'].T))
    t.mlp_out.bias.copy_(torch.from_numpy(mlp['Dense_1']['bias']))
    got = t(torch.from_numpy(np.asarray(x))).numpy()
  want, _ = _loss_and_grads('encoder', x, params)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_compare_times_every_variant_and_reports_ratios():
  result = block_compare.compare(list(block_compare.VARIANTS), WIDTH, HEADS, MLP, TOKENS,
                                 SEQS, 'bfloat16', reps=2, warmup=1)
  assert set(result['variants']) == set(block_compare.VARIANTS)
  assert result['variants']['encoder']['x_encoder'] == 1.0
  assert result['variants']['torch']['x_torch'] == 1.0
  assert result['flops'] == block_compare.block_flops(WIDTH, HEADS, MLP, TOKENS, SEQS)
  text = block_compare.report_markdown(dict(result, load_average=[1, 2, 3]), 'cmd')
  assert '| flax_core |' in text and 'bfloat16' in text


def test_compare_rejects_unknown_variants_and_dtypes():
  with pytest.raises(ValueError, match="choose some of"):
    block_compare.compare(['fast'], WIDTH, HEADS, MLP, TOKENS, SEQS, 'float32', reps=1)
  with pytest.raises(ValueError, match='choose float32 or bfloat16'):
    block_compare.compare(['encoder'], WIDTH, HEADS, MLP, TOKENS, SEQS, 'float16', reps=1)


def test_block_flops_counts_the_matmuls():
  # One token, width 1, MLP 1: q, k, v, out (4 MACs) + MLP (2 MACs) + attention (2 MACs).
  assert block_compare.block_flops(1, 1, 1, 1, 1) == 3 * (2 * 6 + 4)
