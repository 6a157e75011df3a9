"""Tests for image pretraining (vivit_adapter.studies.image_pretrain and its CLI,
vivit_adapter.image_pretrain): the image task, the .npz layout, the surgery."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_pipelines import synthetic
from tests import helpers
from vivit_adapter import checkpoints, configs, models
from vivit_adapter import image_pretrain as image_pretrain_cli
from vivit_adapter.studies import image_pretrain
from vivit_adapter.checkpoints import vit_npz

NUM_LAYERS = 2


def tiny_config() -> ml_collections.ConfigDict:
  config = configs.base_config()
  helpers.tiny_model(config.model, width=16, patches=(8, 8, 2), layers=NUM_LAYERS, mlp=32)
  config.dataset.crop_size = 32
  return config


def expected_vt_names(num_layers):
  """google-research/vision_transformer's names (reference/vit_npz_names.txt, layout 1)."""
  names = {'cls', 'embedding/kernel', 'embedding/bias', vit_npz.POSEMB, 'head/kernel',
           'head/bias', 'Transformer/encoder_norm/scale', 'Transformer/encoder_norm/bias'}
  for i in range(num_layers):
    b = f'Transformer/encoderblock_{i}/'
    names |= {b + f'{ln}/{p}' for ln in ('LayerNorm_0', 'LayerNorm_2')
              for p in ('scale', 'bias')}
    names |= {b + f'MultiHeadDotProductAttention_1/{n}/{p}'
              for n in ('query', 'key', 'value', 'out') for p in ('kernel', 'bias')}
    names |= {b + f'MlpBlock_3/Dense_{j}/{p}' for j in (0, 1) for p in ('kernel', 'bias')}
  return names


def random_image_params(model, seed=0):
  """Initialised params with every leaf randomised (cls, biases and head start at 0)."""
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))['params']
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


def test_image_example_is_deterministic_and_labelled():
  a = synthetic.image_example(np.random.default_rng(3))
  b = synthetic.image_example(np.random.default_rng(3))
  np.testing.assert_array_equal(a.frame, b.frame)
  assert (a.shape, a.x, a.y) == (b.shape, b.x, b.y)
  assert a.frame.shape == (32, 32, 3) and a.frame.dtype == np.uint8
  examples = [synthetic.image_example(np.random.default_rng(i), resolution=16)
              for i in range(60)]
  assert {e.shape for e in examples} == set(range(len(synthetic.SHAPES)))
  assert all(0 <= e.x < 1 and 0 <= e.y < 1 for e in examples)
  labels = [image_pretrain.TASKS['position'][1](e) for e in examples]
  assert labels == [int(e.y * 4) * 4 + int(e.x * 4) for e in examples]
  assert len(set(labels)) > 8  # the actor goes everywhere


def test_saved_npz_has_the_vision_transformer_layout(tmp_path):
  model = image_pretrain.image_model(tiny_config().model, num_classes=5)
  params = random_image_params(model)
  path = str(tmp_path / 'vit.npz')
  image_pretrain.save_npz(params, path)
  with np.load(path) as npz:
    assert set(npz.files) == expected_vt_names(NUM_LAYERS)
    assert npz['embedding/kernel'].shape == (8, 8, 3, 16)
    assert npz[vit_npz.POSEMB].shape == (1, 17, 16)
    assert npz['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel'].shape \
        == (16, 2, 8)
  assert vit_npz.detect_vit_layout(list(np.load(path).files)) == vit_npz.VISION_TRANSFORMER
  assert not os.path.exists(path + '.tmp.npz')


@pytest.mark.parametrize('method', ['central_frame', 'average'])
def test_loaded_spatial_encoder_reproduces_image_features(tmp_path, method):
  """The surgery path a real run takes: .npz -> load_init_params -> ViViT spatial encoder."""
  config = tiny_config()
  image_model = image_pretrain.image_model(config.model, num_classes=5)
  image_params = random_image_params(image_model)
  path = str(tmp_path / 'vit.npz')
  image_pretrain.save_npz(image_params, path)
  video_model = models.create_model(config.model, num_classes=3)
  images = jax.random.normal(jax.random.PRNGKey(7), (2, 32, 32, 3))
  video = jnp.repeat(images[:, None], 4, axis=1)  # constant over time, 2 tubelets
  target = video_model.init(jax.random.PRNGKey(0), video)['params']
  init_cfg = config.init_from
  init_cfg.checkpoint_path, init_cfg.checkpoint_format = path, 'vit_npz'
  init_cfg.kernel_init_method = method
  params, message = checkpoints.load_init_params(init_cfg, jax.device_get(target),
                                                 model_config=config.model)
  assert 'cls_SpatialTransformer' in message and 'SpatialTransformer' in message
  _, state = video_model.apply(
      {'params': params}, video,
      capture_intermediates=lambda mdl, _: mdl.name == 'SpatialTransformer')
  (tokens,) = state['intermediates']['SpatialTransformer']['__call__']
  tokens = tokens.reshape(2, 2, 17, 16)  # (B*T', 1+N, D) -> (B, T', 1+N, D)
  features = image_model.apply({'params': image_params}, images, features=True)
  for t in range(2):
    np.testing.assert_allclose(tokens[:, t], features, atol=2e-5, rtol=1e-5)


def test_pretrain_writes_checkpoint_and_report(tmp_path):
  config = tiny_config()
  settings = image_pretrain.PretrainSettings(steps=2, batch_size=4, num_train_images=8,
                                             num_eval_images=4)
  out = str(tmp_path / 'img' / 'vit_image.npz')
  report = image_pretrain.pretrain(out, config, settings=settings)
  with open(str(tmp_path / 'img' / 'vit_image.json')) as f:
    assert json.load(f) == json.loads(json.dumps(report))
  assert report['num_classes'] == 16 and report['task'] == 'position'
  assert 0.0 <= report['eval_top1'] <= 1.0 and report['train_time_s'] > 0
  flat = vit_npz.load_vit_npz(out)
  assert flat['head/kernel'].shape == (16, 16)


def test_bad_arguments_say_what_to_do(tmp_path, capsys):
  with pytest.raises(SystemExit):
    image_pretrain_cli.main([f'--output={tmp_path}/vit.msgpack'])
  for flag in ('--steps=0', '--batch_size=-1', '--learning_rate=0.0'):
    with pytest.raises(SystemExit) as e:  # was optax's "requires positive decay_steps"
      image_pretrain_cli.main([f'--output={tmp_path}/vit.npz', flag])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f'error: {flag} must be positive.')
  with pytest.raises(FileNotFoundError, match='no metadata.json there'):
    image_pretrain.world_of(str(tmp_path), 32)
  with pytest.raises(ValueError, match=r"task='colour'; expected one of \['position', "):
    image_pretrain.pretrain(str(tmp_path / 'v.npz'), tiny_config(),
                            settings=image_pretrain.PretrainSettings(task='colour'))


def test_cli_sizes_the_vit_from_the_default_experiment_or_config(tmp_path):
  from vivit_adapter.studies import experiment_configs  # pylint: disable=g-import-not-at-top
  args = image_pretrain_cli.parse_args([f'--output={tmp_path}/vit.npz', '--steps=7'])
  assert args.steps == 7
  default = experiment_configs.load(image_pretrain.DEFAULT_EXPERIMENT)
  assert image_pretrain_cli.load_config(args).to_dict() == default.to_dict()
  path = experiment_configs.path('synthetic_stage2')
  args = image_pretrain_cli.parse_args([f'--output={tmp_path}/vit.npz', f'--config={path}'])
  assert image_pretrain_cli.load_config(args).experiment_name == 'synthetic_stage2'
