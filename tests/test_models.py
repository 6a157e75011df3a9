"""Tests for vivit_adapter.models: structure, numerics, adapter identity, freezing, chunking."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests import helpers
from tests.helpers import init, perturbed_params, random_video, run
from vivit_adapter.train_lib import startup
from vivit_adapter import configs
from vivit_adapter.models import adapter as adapter_lib
from vivit_adapter.models import create_model, names, variants

# A copy of ../shared/reference/scenic_vivit_fe_params.txt (scenic's ViViT-FE parameter
# listing), kept in the repository so the test runs from any checkout.
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                         'scenic_vivit_fe_params.txt')


def tiny_config(**overrides):
  """The tiny `config.model` these tests use; overrides are dotted model keys."""
  return helpers.tiny_model(configs.base_config().model, **overrides)


def grad(model, params, video):
  return jax.jit(jax.grad(lambda p, v: loss_fn(model, p, v)))(params, video)


def flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


# ---------------------------------------------------------------- structure ---

def read_reference():
  ref = {}
  with open(REFERENCE) as f:
    for line in f:
      if line.startswith('#') or not line.strip():
        continue
      name, shape = line.split(' ', 1)
      ref[name] = tuple(int(s) for s in shape.strip('()\n ').split(',') if s.strip())
  return ref


def test_b16x2_tree_matches_scenic_listing_name_for_name():
  cfg = configs.base_config().model
  variants.apply_variant(cfg, 'B/16x2')
  model = create_model(cfg, 400)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 224, 224, 3))))
  ours = {k: tuple(v.shape) for k, v in flat(shapes['params']).items()}
  ref = read_reference()
  # The listing shows encoderblock_0 for every block; expand it to all 12 / 4 blocks.
  expected = {}
  for name, shape in ref.items():
    if 'encoderblock_0/' in name:
      depth = 12 if name.startswith('Spatial') else 4
      for i in range(depth):
        expected[name.replace('encoderblock_0/', f'encoderblock_{i}/')] = shape
    else:
      expected[name] = shape
  assert ours == expected


@pytest.mark.parametrize('size', sorted(variants.VIT_SIZES))
def test_every_variant_builds(size):
  name = f'{size}/16x2'
  cfg = configs.base_config().model
  variants.apply_variant(cfg, name)
  resolved = cfg
  width, depth, mlp, heads = variants.VIT_SIZES[size]
  assert resolved.hidden_size == width
  assert resolved.spatial_transformer.num_layers == depth
  assert resolved.spatial_transformer.num_heads == heads
  assert tuple(resolved.patches.size) == (16, 16, 2)
  # Full size: structure only, without allocating.
  model = create_model(cfg, 10)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3))))
  leaves = flat(shapes['params'])
  assert f'SpatialTransformer/encoderblock_{depth - 1}/MlpBlock_0/Dense_0/kernel' in leaves
  assert leaves['embedding/kernel'].shape == (2, 16, 16, 3, width)
  # Tiny width, the variant's heads, two blocks per encoder: it really runs.
  tiny = tiny_config()
  variants.apply_variant(tiny, name)
  tiny.spatial_transformer.num_layers = tiny.temporal_transformer.num_layers = 2
  tiny.hidden_size = 4 * heads
  tiny.patches.size = (8, 8, 2)
  tiny.spatial_transformer.mlp_dim = tiny.temporal_transformer.mlp_dim = 8
  model = create_model(tiny, 3)
  video = random_video((1, 4, 16, 16, 3))
  out = run(model, init(model, video), video)
  assert out.shape == (1, 3)


def test_name_groups_partition_the_top_level_of_every_model():
  # The groups of models/names.py decide what is frozen and what a checkpoint restores:
  # a top-level name outside them would escape both.
  groups = names.SPATIAL_GROUP + names.STAGE2_NEW + names.TEMPORAL_GROUP + names.HEAD_GROUP
  assert len(set(groups)) == len(groups)
  video = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32)
  for overrides, expected in [
      ({'adapter.type': 'attention'}, groups),
      ({'adapter.type': 'mlp', 'classifier': 'gap'},
       (names.EMBEDDING, names.SPATIAL, names.ADAPTER, names.TEMPORAL, names.HEAD)),
      ({}, names.SPATIAL_GROUP + names.TEMPORAL_GROUP + names.HEAD_GROUP)]:
    model = create_model(tiny_config(**overrides), 3)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), video)['params']
    assert set(params) == set(expected), overrides


def test_make_adapter_refuses_an_unknown_type():
  # Not only models.check_choices: an unknown type must never fall through to a real adapter.
  spec = tiny_config(**{'adapter.type': 'lstm'}).adapter
  with pytest.raises(ValueError, match=r"adapter.type='lstm'; expected one of"):
    adapter_lib.make_adapter(spec, 32, 'token', dropout_rate=0.0, attention_dropout_rate=0.0,
                             deterministic=True, dtype=jnp.float32)


def test_unknown_variant_and_bad_settings_fail_with_names():
  with pytest.raises(ValueError, match='Unknown model variant .X/16x2'):
    variants.parse_variant('X/16x2')
  model = create_model(tiny_config(), 3)
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))
  model = create_model(tiny_config(spatial_chunk_size=3), 3)
  with pytest.raises(ValueError, match='spatial_chunk_size=3 must divide'):
    model.init(jax.random.PRNGKey(0), random_video())


# ------------------------------------------------- independent computation ---

def np_layernorm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_gelu(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_attention(x, p):
  q = np.einsum('nd,dhk->hnk', x, p['query']['kernel']) + p['query']['bias'][:, None]
  k = np.einsum('nd,dhk->hnk', x, p['key']['kernel']) + p['key']['bias'][:, None]
  v = np.einsum('nd,dhk->hnk', x, p['value']['kernel']) + p['value']['bias'][:, None]
  logits = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = w @ v  # (h, n, k)
  return np.einsum('hnk,hkd->nd', o, p['out']['kernel']) + p['out']['bias']


def np_encoder(tokens, p, cls):
  """One ViT encoder on one sequence (n, d): CLS, posemb, blocks, final norm, CLS out."""
  x = np.concatenate([cls[0], tokens], 0) + p['posembed_input']['pos_embedding'][0]
  i = 0
  while f'encoderblock_{i}' in p:
    b = p[f'encoderblock_{i}']
    x = x + np_attention(np_layernorm(x, b['LayerNorm_0']), b['MultiHeadDotProductAttention_0'])
    y = np_layernorm(x, b['LayerNorm_1'])
    mlp = b['MlpBlock_0']
    y = np_gelu(y @ mlp['Dense_0']['kernel'] + mlp['Dense_0']['bias'])
    x = x + y @ mlp['Dense_1']['kernel'] + mlp['Dense_1']['bias']
    i += 1
  return np_layernorm(x, p['encoder_norm'])[0]


def np_vivit(video, params, patches):
  """Frame-by-frame spatial ViT, CLS gathered, temporal encoder, head — in numpy float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  ph, pw, pt = patches
  kernel = p['embedding']['kernel']  # (t, h, w, c, d)
  out = []
  for clip in np.asarray(video, np.float64):
    t, hh, ww, _ = clip.shape
    cls_per_index = []
    for ti in range(t // pt):
      tube = clip[ti * pt:(ti + 1) * pt]
      patches_ = []
      for yi in range(hh // ph):
        for xi in range(ww // pw):
          cube = tube[:, yi * ph:(yi + 1) * ph, xi * pw:(xi + 1) * pw]
          patches_.append(np.einsum('thwc,thwcd->d', cube, kernel) + p['embedding']['bias'])
      cls_per_index.append(
          np_encoder(np.stack(patches_), p['SpatialTransformer'], p['cls_SpatialTransformer']))
    rep = np_encoder(np.stack(cls_per_index), p['TemporalTransformer'],
                     p['cls_TemporalTransformer'])
    out.append(rep @ p['output_projection']['kernel'] + p['output_projection']['bias'])
  return np.stack(out)


def test_factorised_encoder_equals_independent_computation():
  cfg = tiny_config()
  model = create_model(cfg, 5)
  video = random_video()
  params = perturbed_params(model, video)
  ours = run(model, params, video)
  ref = np_vivit(video, params, cfg.patches.size)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5, rtol=1e-5)
  assert np.abs(ref).max() > 0.05  # the head is not zero: the comparison means something


# ------------------------------------------------------------ adapter, init ---

@pytest.mark.parametrize('adapter', ['attention', 'mlp'])
def test_identity_at_init_stage2_gives_stage1_logits(adapter):
  video = random_video()
  stage1 = create_model(tiny_config(), 5)
  p1 = perturbed_params(stage1, video)
  stage2 = create_model(tiny_config(**{'adapter.type': adapter, 'freeze_spatial': True}), 5)
  p2 = init(stage2, video, 3)
  assert set(p2) - set(p1) == {'Adapter'}
  merged = dict(p1, Adapter=p2['Adapter'])
  np.testing.assert_allclose(run(stage2, merged, video),
                             run(stage1, p1, video), atol=1e-6)
  # Not trivially equal: once the adapter's parameters move, the logits move.
  noisy = jax.tree.map(
      lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(9), a.shape), p2['Adapter'])
  moved = dict(merged, Adapter=noisy)
  assert np.abs(run(stage2, moved, video) -
                run(stage1, p1, video)).max() > 1e-3


def test_head_init_is_zero_by_default_and_random_on_request():
  video = random_video()
  zero = init(create_model(tiny_config(), 5), video)['output_projection']['kernel']
  assert not np.any(np.asarray(zero))
  rand = init(create_model(tiny_config(head_kernel_init='lecun_normal'), 5), video)
  kernel = np.asarray(rand['output_projection']['kernel'])
  np.testing.assert_allclose(kernel.std(), 1 / np.sqrt(32), rtol=0.3)


def test_gap_classifier_has_no_cls_tokens():
  model = create_model(tiny_config(classifier='gap'), 5)
  video = random_video()
  params = init(model, video, 0)
  assert not any(k.startswith('cls_') for k in params)
  assert params['SpatialTransformer']['posembed_input']['pos_embedding'].shape == (1, 16, 32)
  assert run(model, params, video).shape == (2, 5)


# ---------------------------------------------------------------- freezing ---

def trainable_mask(params):
  frozen = ('embedding', 'cls_SpatialTransformer', 'SpatialTransformer')
  return {k: k not in frozen for k in params}


def loss_fn(model, params, video):
  return jnp.sum(run(model, params, video) ** 2)


def test_frozen_spatial_gets_exactly_zero_gradient():
  video = random_video()
  frozen = create_model(tiny_config(**{'freeze_spatial': True, 'adapter.type': 'attention'}), 5)
  params = perturbed_params(frozen, video)
  grads = grad(frozen, params, video)
  for name in ('embedding', 'cls_SpatialTransformer', 'SpatialTransformer'):
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads[name])), name
  for name in ('Adapter', 'TemporalTransformer', 'output_projection'):
    assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads[name])), name
  # The same model unfrozen does train the spatial encoder.
  e2e = create_model(tiny_config(**{'adapter.type': 'attention'}), 5)
  grads = grad(e2e, params, video)
  assert np.abs(np.asarray(grads['embedding']['kernel'])).max() > 0


def compiled_temp_bytes(model, params, video, trainable_only):
  if trainable_only:
    mask = trainable_mask(params)
    train = {k: v for k, v in params.items() if mask[k]}
    fixed = {k: v for k, v in params.items() if not mask[k]}
    fn = jax.grad(lambda t, f, v: loss_fn(model, {**t, **f}, v))
    args = (train, fixed, video)
  else:
    fn = jax.grad(lambda p, v: loss_fn(model, p, v))
    args = (params, video)
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_frozen_gradient_compiles_to_far_less_memory():
  overrides = {'spatial_transformer.num_layers': 4, 'temporal_transformer.num_layers': 1,
               'adapter.type': 'attention'}
  video = jnp.zeros((2, 16, 32, 32, 3))
  e2e = create_model(tiny_config(**overrides), 5)
  params = helpers.abstract_params(e2e, video)
  frozen = create_model(tiny_config(freeze_spatial=True, **overrides), 5)
  e2e_bytes = compiled_temp_bytes(e2e, params, video, trainable_only=False)
  frozen_bytes = compiled_temp_bytes(frozen, params, video, trainable_only=True)
  assert frozen_bytes < 0.25 * e2e_bytes, (frozen_bytes, e2e_bytes)


# ------------------------------------------------------- chunking and remat ---

def assert_same_function(model, reference, params, video, atol):
  """Same logits (to atol) and same gradients (to 1e-5) for the same parameters."""
  np.testing.assert_allclose(run(model, params, video), run(reference, params, video),
                             atol=atol)
  for a, b in zip(jax.tree.leaves(grad(model, params, video)),
                  jax.tree.leaves(grad(reference, params, video))):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('freeze', [False, True])
def test_chunked_spatial_equals_unchunked(freeze):
  video = random_video()
  base = create_model(tiny_config(freeze_spatial=freeze), 5)
  chunked = create_model(tiny_config(freeze_spatial=freeze, spatial_chunk_size=2), 5)
  params = perturbed_params(base, video)
  assert_same_function(chunked, base, params, video, atol=1e-5)
  # Same parameter tree whichever way the model is built.
  p_chunked = helpers.abstract_params(chunked, video)
  assert jax.tree.structure(p_chunked) == jax.tree.structure(params)


def test_chunked_frozen_spatial_memory_does_not_grow_with_frames():
  overrides = {'freeze_spatial': True, 'spatial_transformer.num_layers': 2,
               'temporal_transformer.num_layers': 1, 'adapter.type': 'mlp'}
  temps = {}
  for chunk in (0, 2):
    model = create_model(tiny_config(spatial_chunk_size=chunk, **overrides), 5)
    video = jnp.zeros((1, 32, 32, 32, 3))
    params = helpers.abstract_params(model, video)
    temps[chunk] = compiled_temp_bytes(model, params, video, trainable_only=True)
  assert temps[2] < 0.5 * temps[0], temps


# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); over
# the tiny model's two spatial and two temporal blocks the logits stay within 2% of
# their range of the float32 model's. That is the documented tolerance (docs/training.md, "On a
# GPU"); the head and the loss run in float32.
BF16_LOGIT_TOLERANCE = 0.02


@pytest.mark.parametrize('overrides', [{}, {'freeze_spatial': True, 'adapter.type': 'attention',
                                           'spatial_chunk_size': 2}])
def test_bfloat16_logits_are_close_to_float32_for_the_same_parameters(overrides):
  video = random_video()
  f32 = create_model(tiny_config(**overrides), 5)
  bf16 = create_model(tiny_config(dtype='bfloat16', **overrides), 5)
  params = perturbed_params(f32, video, scale=0.2)
  want, got = np.asarray(run(f32, params, video)), run(bf16, params, video)
  assert got.dtype == jnp.float32  # the head promotes to its float32 parameters
  tokens = run(bf16, params, video, part='frozen')
  assert tokens.dtype == jnp.bfloat16  # activations are bfloat16
  error = np.abs(np.asarray(got) - want).max()
  scale = np.abs(want).max()
  assert scale > 0.5 and 0 < error <= BF16_LOGIT_TOLERANCE * scale, (error, scale)


@pytest.mark.parametrize('adapter', ['attention', 'mlp'])
def test_recompute_frozen_equals_the_chunked_stage2_model(adapter):
  video = random_video()
  overrides = {'freeze_spatial': True, 'spatial_chunk_size': 2, 'adapter.type': adapter}
  chunked = create_model(tiny_config(**overrides), 5)
  fused = create_model(tiny_config(recompute_frozen=True, **overrides), 5)
  params = perturbed_params(chunked, video)
  assert_same_function(fused, chunked, params, video, atol=1e-5)
  assert jax.tree.structure(helpers.abstract_params(fused, video)) == jax.tree.structure(params)


def test_recompute_frozen_keeps_no_frozen_tokens():
  # The frozen tokens grow with frames in the chunked stage-2 step; recomputed they are
  # never stored, so its temp memory barely grows from 16 to 64 frames.
  overrides = {'freeze_spatial': True, 'spatial_chunk_size': 2, 'adapter.type': 'attention',
               'spatial_transformer.num_layers': 1, 'temporal_transformer.num_layers': 1}
  growth = {}
  for recompute in (False, True):
    model = create_model(tiny_config(recompute_frozen=recompute, **overrides), 5)
    temps = []
    for frames in (16, 64):
      video = jnp.zeros((2, frames, 32, 32, 3))
      temps.append(compiled_temp_bytes(model, helpers.abstract_params(model, video), video,
                                       trainable_only=True))
    growth[recompute] = temps[1] - temps[0]
  # 48 more frames = 24 temporal indices x 65 tokens x 32 wide x 2 clips, 4 bytes each.
  tokens = 24 * 65 * 32 * 2 * 4
  assert growth[False] > tokens and growth[True] < tokens / 2, growth


def test_remat_equals_no_remat():
  video = random_video()
  base = create_model(tiny_config(), 5)
  remat = create_model(tiny_config(remat=True), 5)
  params = perturbed_params(base, video)
  assert_same_function(remat, base, params, video, atol=1e-6)


# ------------------------------------------------------------- regularisers ---

def test_dropout_and_stochastic_depth_only_in_training():
  cfg = tiny_config(dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_droplayer_rate=0.3)
  model = create_model(cfg, 5)
  video = random_video()
  params = perturbed_params(model, video)
  det = run(model, params, video, train=False)
  clean = run(create_model(tiny_config(), 5), params, video)
  np.testing.assert_allclose(det, clean, atol=1e-6)
  train = jax.jit(lambda p, v, k: model.apply({'params': p}, v, train=True,
                                              rngs={'dropout': k}))
  a = train(params, video, jax.random.PRNGKey(1))
  b = train(params, video, jax.random.PRNGKey(1))
  c = train(params, video, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - det).max() > 1e-4 and np.abs(a - c).max() > 1e-4


def test_stochastic_depth_drops_whole_branches_per_example():
  from vivit_adapter.models.layers import StochasticDepth
  x = jnp.ones((1000, 3, 4))
  y = StochasticDepth(rate=0.25, deterministic=False).apply(
      {}, x, rngs={'dropout': jax.random.PRNGKey(0)})
  per_example = np.asarray(y).reshape(1000, -1)
  # Each example is either all dropped or all kept (scaled by 1/keep).
  assert set(np.unique(per_example)) <= {0.0, np.float32(1 / 0.75)}
  assert np.all(per_example.min(1) == per_example.max(1))
  assert 0.65 < np.mean(per_example[:, 0] > 0) < 0.85


# ------------------------------------------------- the frozen boundary (part=) ---

@pytest.mark.parametrize('adapter', ['attention', 'mlp', 'none'])
def test_frozen_then_trainable_part_equals_whole_model(adapter):
  # Stage 2 from cached features computes the frozen part once and the trainable part
  # every step: their composition must be the model, and the frozen part must return
  # what the adapter reads (every token for 'attention', the pooled vector otherwise).
  model = create_model(tiny_config(freeze_spatial=True, **{'adapter.type': adapter}), 5)
  video = random_video()
  params = perturbed_params(model, video)
  features = run(model, params, video, part='frozen')
  t, n = video.shape[1] // 2, (16 // 4) ** 2
  assert features.shape == ((2, t, 1 + n, 32) if adapter == 'attention' else (2, t, 32))
  whole = run(model, params, video)
  split = run(model, params, features, part='trainable')
  np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_trainable_part_of_attention_adapter_refuses_pooled_features():
  model = create_model(tiny_config(freeze_spatial=True, **{'adapter.type': 'attention'}), 5)
  video = random_video()
  params = init(model, video)
  with pytest.raises(ValueError, match="'attention' adapter reads every token"):
    model.apply({'params': params}, jnp.zeros((2, 4, 32)), part='trainable')
  with pytest.raises(ValueError, match="part='spatial'"):
    model.apply({'params': params}, video, part='spatial')


# --------------------------------------------------- the spatial dial (k) ---
# config.model.trainable_spatial_layers = k: the embedding and spatial layers [0, L-k)
# frozen, layers [L-k, L) and the encoder norm trained (docs/design.md §2d).

DIAL = {'freeze_spatial': True, 'adapter.type': 'mlp', 'spatial_transformer.num_layers': 3,
        'temporal_transformer.num_layers': 1}


def is_below_dial(path, k, layers=3):
  """Frozen at dial k: the embedding, the spatial CLS, posemb and blocks [0, L-k)."""
  if path[0] in ('embedding', 'cls_SpatialTransformer'):
    return True
  if path[0] != 'SpatialTransformer':
    return False
  if path[1] == 'posembed_input':
    return True
  return path[1].startswith('encoderblock_') and int(path[1].split('_')[1]) < layers - k


@pytest.mark.parametrize('k,chunk', [(1, 0), (2, 2), (3, 0)])
def test_dial_gradient_of_trained_layers_equals_end_to_end(k, chunk):
  # Same loss, same parameters: the dial's gradient of every trained parameter (the
  # top k spatial layers and the norm included) is the end-to-end model's, and every
  # parameter below the dial gets exactly zero (stop_gradient), chunked or not.
  video = random_video()
  dial = create_model(tiny_config(trainable_spatial_layers=k, spatial_chunk_size=chunk,
                                  **DIAL), 5)
  e2e = create_model(tiny_config(**{**DIAL, 'freeze_spatial': False}), 5)
  params = perturbed_params(e2e, video)
  np.testing.assert_allclose(run(dial, params, video), run(e2e, params, video), atol=1e-5)
  got, want = flat(grad(dial, params, video)), flat(grad(e2e, params, video))
  assert set(got) == set(want)
  trained = 0
  for name, g in got.items():
    path = tuple(name.split('/'))
    if is_below_dial(path, k):
      assert np.all(np.asarray(g) == 0), name
    else:
      np.testing.assert_allclose(g, want[name], rtol=1e-4, atol=1e-6, err_msg=name)
      trained += name.startswith('SpatialTransformer/')
  # 16 leaves per block (2 norms, q/k/v/out, 2 dense: scale/kernel and bias each) + the
  # encoder norm's 2.
  assert trained == 16 * k + 2


def test_dial_zero_is_the_frozen_stage2_model_bit_for_bit():
  # k = 0 (the default) computes exactly what the frozen stage 2 computes, which in the
  # forward pass is exactly the end-to-end model: the same operations in the same order.
  video = random_video()
  stage2 = create_model(tiny_config(trainable_spatial_layers=0, **DIAL), 5)
  e2e = create_model(tiny_config(**{**DIAL, 'freeze_spatial': False}), 5)
  params = perturbed_params(e2e, video)
  np.testing.assert_array_equal(run(stage2, params, video), run(e2e, params, video))
  assert run(stage2, params, video, part='frozen').shape == (2, 4, 32)  # pooled, as before


@pytest.mark.parametrize('k', [1, 3])
def test_dial_frozen_part_is_every_token_below_the_dial(k):
  # The cache below the dial: every token after layer L-k (the top layers attend over
  # all of them), whatever the adapter; the trainable part then runs the top layers.
  video = random_video()
  model = create_model(tiny_config(trainable_spatial_layers=k, **DIAL), 5)
  params = perturbed_params(model, video)
  tokens = run(model, params, video, part='frozen')
  assert tokens.shape == (2, 4, 1 + 16, 32)
  # Independently, in numpy float64: embedding, CLS, posemb and blocks [0, L-k).
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(video, np.float64).reshape(2, 4, 2, 4, 4, 4, 4, 3)  # b,t',pt,y,ph,x,pw,c
  x = np.einsum('btiyjxkc,ijkcd->btyxd', x, p['embedding']['kernel']).reshape(2, 4, 16, 32)
  x = x + p['embedding']['bias']
  cls = np.broadcast_to(p['cls_SpatialTransformer'], (2, 4, 1, 32))
  x = np.concatenate([cls, x], 2) + p['SpatialTransformer']['posembed_input']['pos_embedding']
  for i in range(3 - k):
    b = p['SpatialTransformer'][f'encoderblock_{i}']
    for seq in np.ndindex(2, 4):
      y = x[seq] + np_attention(np_layernorm(x[seq], b['LayerNorm_0']),
                                b['MultiHeadDotProductAttention_0'])
      mlp = b['MlpBlock_0']
      h = np_gelu(np_layernorm(y, b['LayerNorm_1']) @ mlp['Dense_0']['kernel'] +
                  mlp['Dense_0']['bias'])
      x[seq] = y + h @ mlp['Dense_1']['kernel'] + mlp['Dense_1']['bias']
  np.testing.assert_allclose(tokens, x, atol=1e-4)
  np.testing.assert_allclose(run(model, params, tokens, part='trainable'),
                             run(model, params, video), rtol=1e-5, atol=1e-6)


def test_dial_settings_fail_with_one_line_naming_the_key():
  from vivit_adapter.models import check_dial  # pylint: disable=g-import-not-at-top
  c = configs.base_config()
  helpers.tiny_model(c.model, **{'spatial_transformer.num_layers': 3})
  c.model.trainable_spatial_layers = 1
  with pytest.raises(ValueError, match=r'^config.model.trainable_spatial_layers=1 needs '
                                       r'config.model.freeze_spatial=True'):
    startup.check_config(c)  # the start-up check runs it
  c.model.freeze_spatial, c.model.trainable_spatial_layers = True, 4
  with pytest.raises(ValueError, match=r'trainable_spatial_layers=4 must be in \[0, 3\]'):
    check_dial(c.model)
  c.model.trainable_spatial_layers = -1
  with pytest.raises(ValueError, match=r'trainable_spatial_layers=-1 must be in'):
    check_dial(c.model)
  c.model.trainable_spatial_layers = 3
  check_dial(c.model)
