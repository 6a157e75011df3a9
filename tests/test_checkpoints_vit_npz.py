"""Tests for vivit_adapter.checkpoints.vit_npz: both .npz layouts into the spatial encoder."""

import functools

import jax
import numpy as np
import pytest

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import merge, posemb, vit_npz

_VT_NAMES = {'LayerNorm_0': 'LayerNorm_0', 'MultiHeadDotProductAttention_0':
             'MultiHeadDotProductAttention_1', 'LayerNorm_1': 'LayerNorm_2',
             'MlpBlock_0': 'MlpBlock_3'}


def _model(t=2, classifier='token', layers=2, width=32, adapter='none'):
  cfg = configs.base_config().model
  cfg.hidden_size, cfg.patches.size, cfg.classifier = width, (4, 4, t), classifier
  cfg.adapter.type = adapter
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = layers, 2, 64
  return models.create_model(cfg, 5)


@functools.lru_cache(maxsize=None)
def _params(t=2, classifier='token', layers=2, width=32, frames=8, size=16, seed=0):
  """A tiny model's parameter tree filled with random values (eval_shape: no compile)."""
  video = jax.ShapeDtypeStruct((1, frames, size, size, 3), np.float32)
  shapes = jax.eval_shape(_model(t, classifier, layers, width).init, jax.random.key(0), video)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype),
                      shapes['params'])


def _image_vit_flat(layout, classifier='token', layers=2, width=32):
  """The spatial half of a t=1 tiny model written in an image-ViT .npz layout."""
  flat = merge.flatten(_params(1, classifier, layers, width, frames=1, seed=7))
  out = {'embedding/kernel': flat['embedding/kernel'][0], 'embedding/bias': flat['embedding/bias'],
         'head/kernel': np.ones((width, 10), np.float32), 'head/bias': np.ones(10, np.float32)}
  if 'cls_SpatialTransformer' in flat:
    out['cls'] = flat['cls_SpatialTransformer']
  for k, v in flat.items():
    if not k.startswith('SpatialTransformer/'):
      continue
    k = k.replace('SpatialTransformer/', 'Transformer/')
    parts = k.split('/')
    if layout == 'vision_transformer' and parts[1].startswith('encoderblock_'):
      parts[2] = _VT_NAMES[parts[2]]
    out['/'.join(parts)] = v
  if layout == 'vision_transformer':
    out['pre_logits/kernel'] = np.ones((width, width), np.float32)
  else:  # big_vision: patch-only pos_embedding at the root, no posemb for cls.
    pe = out.pop(vit_npz.POSEMB)
    out['pos_embedding'] = pe[:, 1:] if 'cls' in out else pe
  return flat, out


def _write(tmp_path, flat, prefix=''):
  path = str(tmp_path / 'vit.npz')
  np.savez(path, **{prefix + k: v for k, v in flat.items()})
  return path


@functools.lru_cache(maxsize=None)
def _capture_fn(t):
  """A jitted apply of `_model(t)` that also returns the embedding and spatial outputs."""
  return jax.jit(functools.partial(
      _model(t).apply, mutable=['intermediates'],
      capture_intermediates=lambda m, _: m.name in ('embedding', 'SpatialTransformer')))


def _spatial_tokens(t, params, video):
  inter = _capture_fn(t)({'params': params}, video)[1]['intermediates']
  return inter['embedding']['__call__'][0], inter['SpatialTransformer']['__call__'][0]


@pytest.mark.parametrize('layout,prefix', [('vision_transformer', ''),
                                           ('big_vision', ''), ('big_vision', 'params/')])
def test_both_layouts_reproduce_the_spatial_encoder(tmp_path, layout, prefix):
  image_flat, npz = _image_vit_flat(layout)
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz, prefix))
  target = _params()
  merged = vit_npz.vit_to_vivit_spatial(loaded, target, source_name='vit.npz')
  out = merge.flatten(merged.params)
  for k, v in image_flat.items():
    if k.startswith('SpatialTransformer/') or k == 'cls_SpatialTransformer':
      expected = v
      if layout == 'big_vision' and k.endswith('pos_embedding'):
        expected = np.concatenate([np.zeros_like(v[:, :1]), v[:, 1:]], axis=1)
      np.testing.assert_array_equal(out[k], expected, err_msg=k)
  kernel = out['embedding/kernel']
  np.testing.assert_array_equal(kernel[1], image_flat['embedding/kernel'][0])
  np.testing.assert_array_equal(kernel[0], 0.0)
  # Head dropped; temporal encoder, head and everything else keep the target's init.
  target_flat = merge.flatten(target)
  assert set(out) == set(target_flat)
  for k in out:
    if k.startswith(('TemporalTransformer', 'cls_Temporal', 'output_projection')):
      np.testing.assert_array_equal(out[k], target_flat[k])
  # The account the run log prints: every name of the model is restored or fresh.
  assert {k.split('/')[0] for k in merged.restored} == {
      'embedding', 'cls_SpatialTransformer', 'SpatialTransformer'}
  assert {k.split('/')[0] for k in merged.fresh} == {
      'TemporalTransformer', 'cls_TemporalTransformer', 'output_projection'}
  assert set(merged.restored) | set(merged.fresh) == set(target_flat)
  assert {k.split('/')[0] for k in merged.unused} >= {'head'}
  assert merged.notes[0] == 'embedding/kernel inflated 2D -> 3D (central_frame)'


@pytest.mark.parametrize('method', ['central_frame', 'average'])
def test_static_video_embeds_like_the_image(tmp_path, method):
  image_flat, npz = _image_vit_flat('vision_transformer')
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  params = vit_npz.vit_to_vivit_spatial(loaded, _params(), kernel_init_method=method,
                                        source_name='vit.npz').params
  image = np.random.default_rng(0).normal(size=(1, 1, 16, 16, 3)).astype(np.float32)
  video = np.repeat(image, 8, axis=1)
  emb, spatial = _spatial_tokens(2, params, video)
  # Independent check: the 2D conv of the image with the image kernel.
  conv = jax.lax.conv_general_dilated(
      image[:, 0], image_flat['embedding/kernel'][0], (4, 4), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + image_flat['embedding/bias']
  for i in range(4):
    np.testing.assert_allclose(emb[0, i], conv[0], atol=1e-5)
  # And the spatial encoder's tokens equal the image model's, for every temporal index.
  img_emb, img_spatial = _spatial_tokens(1, _params(1, frames=1, seed=7), image)
  np.testing.assert_allclose(emb[0, 0], img_emb[0, 0], atol=1e-5)
  for i in range(4):
    np.testing.assert_allclose(spatial[i], img_spatial[0], atol=1e-5)


def test_inflate_kernel_methods():
  k = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
  central = vit_npz.inflate_kernel(k, 3, 'central_frame')
  assert central.shape == (3, 2, 2, 3, 4)
  np.testing.assert_array_equal(central[1], k)
  np.testing.assert_array_equal(central[[0, 2]], 0.0)
  average = vit_npz.inflate_kernel(k, 4, 'average')
  np.testing.assert_allclose(average.sum(0), k, rtol=1e-6)
  np.testing.assert_allclose(average[2], k / 4)
  with pytest.raises(ValueError, match="kernel_init_method='mean'"):
    vit_npz.inflate_kernel(k, 2, 'mean')


def test_posemb_resized_to_a_larger_grid(tmp_path):
  _, npz = _image_vit_flat('vision_transformer')
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  target = _params(size=24)  # 6x6 patches instead of 4x4
  merged = vit_npz.vit_to_vivit_spatial(loaded, target, source_name='vit.npz')
  pe = merged.params['SpatialTransformer']['posembed_input']['pos_embedding']
  assert pe.shape == (1, 37, 32)
  np.testing.assert_allclose(
      pe, posemb.resize_spatial_posemb(loaded[vit_npz.POSEMB], (6, 6), has_cls=True))
  assert ('SpatialTransformer/posembed_input/pos_embedding resampled (1, 17, 32) -> '
          '(1, 37, 32)') in merged.notes


def test_target_grid_must_fit_the_model(tmp_path):
  _, npz = _image_vit_flat('vision_transformer')
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  with pytest.raises(ValueError, match=r'target_grid=\(4, 2\) has 8 patches, but the '
                     r"model's SpatialTransformer/posembed_input/pos_embedding \(1, 17, 32\) "
                     r'has 16'):
    vit_npz.vit_to_vivit_spatial(loaded, _params(), source_name='v', target_grid=(4, 2))
  with pytest.raises(ValueError, match=r"missing_cls='zero'; expected one of \('error', "
                     r"'zeros'\)"):
    vit_npz.vit_to_vivit_spatial(loaded, _params(), source_name='v', missing_cls='zero')


def test_scanned_big_vision_blocks_are_unstacked(tmp_path):
  image_flat, npz = _image_vit_flat('big_vision')
  blocks = sorted({k.split('/')[1] for k in npz if k.startswith('Transformer/encoderblock_')})
  stacked = {k: v for k, v in npz.items() if not k.startswith('Transformer/encoderblock_')}
  for k in [k for k in npz if k.startswith('Transformer/encoderblock_0/')]:
    rest = k[len('Transformer/encoderblock_0/'):]
    stacked[f'Transformer/encoderblock/{rest}'] = np.stack(
        [npz[f'Transformer/{b}/{rest}'] for b in blocks])
  loaded = vit_npz.load_vit_npz(_write(tmp_path, stacked))
  out = merge.flatten(vit_npz.vit_to_vivit_spatial(loaded, _params(), source_name='v').params)
  name = 'SpatialTransformer/encoderblock_1/MlpBlock_0/Dense_0/kernel'
  np.testing.assert_array_equal(out[name], image_flat[name])


def test_gap_model_without_cls(tmp_path):
  image_flat, npz = _image_vit_flat('big_vision', classifier='gap')
  assert 'cls' not in npz
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz, 'params/'))
  out = merge.flatten(vit_npz.vit_to_vivit_spatial(loaded, _params(classifier='gap'),
                                                   source_name='v').params)
  name = 'SpatialTransformer/posembed_input/pos_embedding'
  np.testing.assert_array_equal(out[name], image_flat[name])


def test_token_checkpoint_into_gap_model_drops_cls(tmp_path):
  image_flat, npz = _image_vit_flat('vision_transformer')
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  merged = vit_npz.vit_to_vivit_spatial(loaded, _params(classifier='gap'), source_name='v')
  out = merged.params
  assert 'cls_SpatialTransformer' not in out
  assert "the image cls token is not used (config.model.classifier='gap')" in merged.notes
  np.testing.assert_array_equal(out['SpatialTransformer']['posembed_input']['pos_embedding'],
                                image_flat['SpatialTransformer/posembed_input/pos_embedding'][:, 1:])


def test_no_cls_into_token_model(tmp_path):
  _, npz = _image_vit_flat('big_vision', classifier='gap')
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  with pytest.raises(ValueError, match=r"/ckpt/b.npz has no 'cls' token .*classifier='gap'"):
    vit_npz.vit_to_vivit_spatial(loaded, _params(), source_name='/ckpt/b.npz')
  merged = vit_npz.vit_to_vivit_spatial(loaded, _params(), source_name='b', missing_cls='zeros')
  out = merged.params
  assert any(n.startswith('cls_SpatialTransformer starts from zeros') for n in merged.notes)
  np.testing.assert_array_equal(out['cls_SpatialTransformer'], 0.0)
  np.testing.assert_array_equal(
      out['SpatialTransformer']['posembed_input']['pos_embedding'][:, 0], 0.0)


def test_depth_and_width_mismatch_name_the_keys(tmp_path):
  _, npz = _image_vit_flat('vision_transformer', layers=2)
  loaded = vit_npz.load_vit_npz(_write(tmp_path, npz))
  with pytest.raises(ValueError) as err:
    vit_npz.vit_to_vivit_spatial(loaded, _params(layers=1), source_name='/ckpt/deep.npz')
  msg = str(err.value)
  assert msg.startswith('Checkpoint /ckpt/deep.npz does not fit the model: 16 tensors the '
                        'model lacks (e.g. SpatialTransformer/encoderblock_1/')
  assert 'unexpected in the checkpoint, not in the model (16):' in msg
  assert 'SpatialTransformer/encoderblock_1/LayerNorm_0/bias (32,)' in msg
  assert 'head' not in msg and 'pre_logits' not in msg
  with pytest.raises(ValueError, match=r'embedding/kernel has shape \(4, 4, 3, 32\), which '
                     r"cannot inflate to the model's \(2, 4, 4, 3, 16\)"):
    vit_npz.vit_to_vivit_spatial(loaded, _params(width=16), source_name='w.npz')


def test_not_a_vit_npz(tmp_path):
  path = _write(tmp_path, {'foo/bar': np.zeros(3)})
  with pytest.raises(ValueError, match='is not an image ViT checkpoint'):
    vit_npz.load_vit_npz(path)
