"""Tests for vivit_adapter.checkpoints.load: `load_init_params` over every format."""

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import load, merge, posemb


def _model_config(adapter='none', width=32):
  cfg = configs.base_config().model
  cfg.hidden_size, cfg.patches.size, cfg.adapter.type = width, (4, 4, 2), adapter
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 2, 2, 64
  return cfg


def _params(adapter='none', frames=8, classes=5, width=32, seed=0, frame_size=(16, 16)):
  """A tiny model's tree with random values (eval_shape: no compile)."""
  model = models.create_model(_model_config(adapter, width), classes)
  video = jax.ShapeDtypeStruct((1, frames) + tuple(frame_size) + (3,), np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), video)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def _init_cfg(path, **overrides):
  cfg = configs.base_config().init_from
  cfg.checkpoint_path = str(path)
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


def _save_workdir(run_dir, params, step):
  with ocp.CheckpointManager(
      os.path.join(run_dir, 'checkpoints'), item_names=('params', 'state', 'meta'),
      options=ocp.CheckpointManagerOptions(create=True)) as mngr:
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        state=ocp.args.StandardSave({'step': np.int32(step)}),
        meta=ocp.args.JsonSave({'step': step})))
    mngr.wait_until_finished()


def _assert_subtree_equal(got, expected, prefixes):
  got, expected = merge.flatten(got), merge.flatten(expected)
  names = [k for k in expected if merge.matches(k, prefixes)]
  assert names
  for k in names:
    np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


def test_workdir_auto_stage1_to_stage2(tmp_path):
  stage1 = _params()
  _save_workdir(str(tmp_path / 'run'), stage1, step=20)
  target = _params('attention', frames=16, seed=1)
  params, msg = load.load_init_params(_init_cfg(tmp_path / 'run'), target,
                                      model_config=_model_config('attention'))
  _assert_subtree_equal(params, stage1, ['embedding', 'SpatialTransformer', 'output_projection',
                                         'cls_TemporalTransformer',
                                         'TemporalTransformer/encoderblock_0'])
  _assert_subtree_equal(params, target, ['Adapter'])
  src_pe = stage1['TemporalTransformer']['posembed_input']['pos_embedding']
  np.testing.assert_array_equal(params['TemporalTransformer']['posembed_input']['pos_embedding'],
                                posemb.interpolate_temporal_posemb(src_pe, 8, has_cls=True))
  assert f'Initialised from workdir checkpoint {tmp_path}/run/checkpoints/20.' in msg
  assert ('restored: SpatialTransformer, TemporalTransformer, cls_SpatialTransformer, '
          'cls_TemporalTransformer, embedding, output_projection') in msg
  assert 'fresh init: Adapter' in msg
  assert ('TemporalTransformer/posembed_input/pos_embedding resampled (1, 5, 32) -> '
          '(1, 9, 32)') in msg
  assert ('into: ViViT-FE hidden_size=32, patches=(4, 4, 2), classifier=token, '
          'adapter=attention') in msg


def test_scenic_auto_file_and_directory(tmp_path):
  source = _params()
  (tmp_path / 'scenic').mkdir()
  with open(tmp_path / 'scenic' / 'checkpoint_7', 'wb') as f:
    f.write(flax.serialization.to_bytes({'optimizer': {'target': source}, 'global_step': 7}))
  for path in (tmp_path / 'scenic', tmp_path / 'scenic' / 'checkpoint_7'):
    params, msg = load.load_init_params(_init_cfg(path), _params(seed=2),
                                        model_config=_model_config())
    _assert_subtree_equal(params, source, ['.*'])
    assert 'Initialised from scenic checkpoint' in msg and 'fresh init: nothing' in msg


def _write_image_vit(path):
  """An image ViT .npz (vision_transformer names) of `_params(seed=3)`'s spatial half:
  16x16 images, 4x4 patches, so a 4x4 grid of position embeddings after the cls row."""
  flat = {k.replace('SpatialTransformer/', 'Transformer/'): v
          for k, v in merge.flatten(_params(seed=3)).items() if k.startswith('SpatialTransformer/')}
  flat.update({'embedding/kernel': np.ones((4, 4, 3, 32), np.float32),
               'embedding/bias': np.ones(32, np.float32), 'cls': np.ones((1, 1, 32), np.float32),
               'head/kernel': np.ones((32, 1000), np.float32)})
  np.savez(path, **flat)
  return flat


def test_vit_npz_auto(tmp_path):
  target = _params('mlp')
  _write_image_vit(tmp_path / 'vit.npz')
  params, msg = load.load_init_params(_init_cfg(tmp_path / 'vit.npz', kernel_init_method='average'),
                                      target, model_config=_model_config('mlp'))
  np.testing.assert_allclose(params['embedding']['kernel'], 0.5)
  _assert_subtree_equal(params, _params(seed=3), ['SpatialTransformer'])
  _assert_subtree_equal(params, target, ['Adapter', 'TemporalTransformer', 'output_projection'])
  assert f'Initialised from vit_npz checkpoint {tmp_path}/vit.npz.' in msg
  assert 'restored: SpatialTransformer, cls_SpatialTransformer, embedding' in msg
  assert ('fresh init: Adapter, TemporalTransformer, cls_TemporalTransformer, '
          'output_projection') in msg
  assert 'not used from the checkpoint: head' in msg
  assert 'embedding/kernel inflated 2D -> 3D (average)' in msg


@pytest.mark.parametrize('frame_size,grid', [((32, 8), (8, 2)), ((16, 8), (4, 2))])
def test_vit_npz_posemb_resized_to_the_models_non_square_grid(tmp_path, frame_size, grid):
  # 32x8 frames: 8x2 patches, as many as the image's 4x4, so taking the grid as square
  # would copy the image's embedding unchanged onto the wrong layout; 16x8: 4x2 patches,
  # which no square grid has.
  pe = _write_image_vit(tmp_path / 'vit.npz')['Transformer/posembed_input/pos_embedding']
  target = _params(frame_size=frame_size)
  params, msg = load.load_init_params(_init_cfg(tmp_path / 'vit.npz'), target,
                                      model_config=_model_config(), frame_size=frame_size)
  expected = posemb.resize_spatial_posemb(pe, grid, has_cls=True)
  assert expected.shape == (1, 1 + grid[0] * grid[1], 32)
  np.testing.assert_allclose(params['SpatialTransformer']['posembed_input']['pos_embedding'],
                             expected, rtol=1e-6)
  if expected.shape != pe.shape:
    assert (f'SpatialTransformer/posembed_input/pos_embedding resampled {pe.shape} -> '
            f'{expected.shape}') in msg


def test_vit_npz_without_cls_follows_init_from_missing_cls(tmp_path):
  flat = {k.replace('SpatialTransformer/', 'Transformer/'): v
          for k, v in merge.flatten(_params(seed=3)).items() if k.startswith('SpatialTransformer/')}
  flat.update({'embedding/kernel': np.ones((4, 4, 3, 32), np.float32),
               'embedding/bias': np.ones(32, np.float32)})  # a 'gap' image model: no cls
  pe = 'Transformer/posembed_input/pos_embedding'
  flat[pe] = flat[pe][:, 1:]  # ... and no cls row in its position embedding
  np.savez(tmp_path / 'gap.npz', **flat)
  target = _params()
  with pytest.raises(ValueError, match=r"gap.npz has no 'cls' token .*config.init_from."
                     r"missing_cls='zeros'"):
    load.load_init_params(_init_cfg(tmp_path / 'gap.npz'), target, model_config=_model_config())
  params, msg = load.load_init_params(_init_cfg(tmp_path / 'gap.npz', missing_cls='zeros'),
                                      target, model_config=_model_config())
  np.testing.assert_array_equal(params['cls_SpatialTransformer'], 0.0)
  np.testing.assert_array_equal(params['SpatialTransformer']['posembed_input'][
      'pos_embedding'], np.concatenate([np.zeros((1, 1, 32)), flat[pe]], axis=1))
  _assert_subtree_equal(params['SpatialTransformer'], _params(seed=3)['SpatialTransformer'],
                        ['encoder_norm', 'encoderblock_0', 'encoderblock_1'])
  assert 'cls_SpatialTransformer starts from zeros' in msg
  bad = _init_cfg(tmp_path / 'gap.npz')
  bad.missing_cls = 'random'
  config = configs.base_config()
  config.init_from = bad
  with pytest.raises(ValueError, match=r'init_from.missing_cls'):
    load.check_config(config)


def test_other_classes_need_restore_output_projection_false(tmp_path):
  _save_workdir(str(tmp_path / 'run'), _params(classes=5), step=1)
  target = _params(classes=7, seed=1)
  with pytest.raises(ValueError, match=r'output_projection/kernel has 5 classes \(32, 5\), the '
                     r'model has 7 \(32, 7\). .*restore_output_projection=False'):
    load.load_init_params(_init_cfg(tmp_path / 'run'), target, model_config=_model_config())
  params, msg = load.load_init_params(
      _init_cfg(tmp_path / 'run', restore_output_projection=False, restore_temporal=False),
      target, model_config=_model_config())
  _assert_subtree_equal(params, target, ['output_projection', 'TemporalTransformer',
                                         'cls_TemporalTransformer'])
  assert 'fresh init: TemporalTransformer, cls_TemporalTransformer, output_projection' in msg


def test_shape_mismatch_names_and_shapes(tmp_path):
  _save_workdir(str(tmp_path / 'run'), _params(width=16), step=1)
  # One summary line of the sizes that differ, then the (capped) per-tensor detail.
  with pytest.raises(ValueError, match=r'(?s)Checkpoint .*/checkpoints/1 does not fit the '
                     r'model: 16 in the checkpoint where the model has 32 \(59 tensors, .*'
                     r'shape mismatch \(71\):\n  SpatialTransformer/encoder_norm/bias: '
                     r'checkpoint \(16,\) vs model \(32,\)'):
    load.load_init_params(_init_cfg(tmp_path / 'run'), _params(), model_config=_model_config())


def test_errors_and_empty_path(tmp_path):
  target = _params()
  params, msg = load.load_init_params(_init_cfg(''), target, model_config=_model_config())
  assert params is target and 'random initialisation' in msg
  with pytest.raises(FileNotFoundError, match=r"checkpoint_path='/no/such/ckpt' does not exist"):
    load.load_init_params(_init_cfg('/no/such/ckpt'), target, model_config=_model_config())
  with pytest.raises(ValueError, match="checkpoint_format='orbax'; expected one of"):
    load.load_init_params(_init_cfg(tmp_path, checkpoint_format='orbax'), target,
                          model_config=_model_config())
  with pytest.raises(FileNotFoundError, match='is a directory without checkpoints'):
    load.load_init_params(_init_cfg(tmp_path), target, model_config=_model_config())
  os.makedirs(tmp_path / 'run' / 'checkpoints')
  with pytest.raises(FileNotFoundError, match='No orbax checkpoint found in .*run/checkpoints'):
    load.load_init_params(_init_cfg(tmp_path / 'run'), target, model_config=_model_config())


def test_detect_format(tmp_path):
  (tmp_path / 'a.npz').write_bytes(b'')
  (tmp_path / 'ckpt.msgpack').write_bytes(b'')
  assert load.detect_format(str(tmp_path / 'a.npz')) == 'vit_npz'
  assert load.detect_format(str(tmp_path / 'ckpt.msgpack')) == 'scenic'
  os.makedirs(tmp_path / 'w' / 'checkpoints' / '5' / 'params')
  assert load.detect_format(str(tmp_path / 'w')) == 'workdir'
  assert load.detect_format(str(tmp_path / 'w' / 'checkpoints')) == 'workdir'
  assert load.detect_format(str(tmp_path / 'w' / 'checkpoints' / '5')) == 'workdir'
