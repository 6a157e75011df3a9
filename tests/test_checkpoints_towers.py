"""Tests for vivit_adapter.checkpoints.towers: CLIP, SigLIP, DINOv2 and OpenCLIP towers
through `load_init_params`, checked against the libraries' own forward pass.

Each tower is a tiny random-weight model built by `transformers` itself and saved as
its users have it on disk (config.json + model.safetensors). OpenCLIP's package cannot
be imported beside this PyTorch (it imports torchvision at import time), so its
checkpoint is the same tiny CLIP's weights written in OpenCLIP's key layout
(open_clip/transformer.py's VisionTransformer: conv1, class_embedding,
positional_embedding, ln_pre, transformer.resblocks.i.{ln_1, attn.in_proj_*,
attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post, proj), and its reference is the
`transformers` CLIP those weights came from.
"""

import jax
import numpy as np
import pytest
import torch
import transformers

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.checkpoints import load, merge, posemb, towers
from vivit_adapter.models import variants

from tests import helpers

WIDTH, HEADS, MLP, LAYERS, PATCH, IMAGE = 32, 4, 64, 2, 8, 32
FRAMES = 4  # tubelet t=2: temporal indices read frames 1 and 3 (central_frame)
_SIZES = dict(hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
              num_attention_heads=HEADS, image_size=IMAGE, patch_size=PATCH)
# name -> (transformers model class, its config, the tower variant of the same switches)
TOWERS = {
    'clip': (transformers.CLIPVisionModel, transformers.CLIPVisionConfig(**_SIZES), 'CLIP'),
    'siglip': (transformers.SiglipVisionModel, transformers.SiglipVisionConfig(**_SIZES),
               'SigLIP'),
    'dinov2': (transformers.Dinov2Model, transformers.Dinov2Config(
        **{**_SIZES, 'intermediate_size': None}, mlp_ratio=MLP // WIDTH), 'DINOv2'),
    'dinov2reg': (transformers.Dinov2WithRegistersModel,
                  transformers.Dinov2WithRegistersConfig(
                      **{**_SIZES, 'intermediate_size': None}, mlp_ratio=MLP // WIDTH,
                      num_register_tokens=4), 'DINOv2reg'),
}


def _randomise(module: torch.nn.Module, seed: int) -> None:
  """Every parameter random (LayerNorm scales and layer scales around 1), so that no
  part of the tower is an identity that a wrong mapping could hide behind."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim == 1 and ('norm' in name or 'lambda' in name) and name.endswith(
          ('weight', 'lambda1')):
        p.copy_(1.0 + 0.2 * noise)
      else:
        p.copy_(0.2 * noise)


def _reference(hf_model, frames: np.ndarray):
  """The library's forward pass on (N, H, W, 3) frames: (pooled, tokens) in float32."""
  with torch.no_grad():
    out = hf_model(pixel_values=torch.from_numpy(frames.transpose(0, 3, 1, 2)))
    tokens = out.last_hidden_state
    if isinstance(hf_model, transformers.CLIPVisionModel):
      # CLIP's last_hidden_state precedes its post_layernorm; the video model's tokens
      # come after its encoder_norm, which is that LayerNorm.
      vision = getattr(hf_model, 'vision_model', hf_model)  # transformers 4 nests it
      tokens = vision.post_layernorm(tokens)
  return out.pooler_output.numpy(), tokens.numpy()


def _model_config(variant: str, adapter: str = 'none', **overrides):
  cfg = configs.base_config().model
  variants.apply_variant(cfg, f'{variant}-B/16x2')
  helpers.tiny_model(cfg, width=WIDTH, patches=(PATCH, PATCH, 2), layers=LAYERS,
                     heads=HEADS, mlp=MLP, **{'adapter.type': adapter, **overrides})
  cfg.temporal_transformer.num_layers = 1
  return cfg


def _init_cfg(path, fmt='auto'):
  init = configs.base_config().init_from
  init.checkpoint_path, init.checkpoint_format = str(path), fmt
  return init


def _load(model_cfg, path, fmt='auto', frame_size=(IMAGE, IMAGE)):
  model = models.create_model(model_cfg, 3)
  video = np.zeros((1, FRAMES) + tuple(frame_size) + (3,), np.float32)
  target = helpers.abstract_params(model, video)
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
  params, message = load.load_init_params(_init_cfg(path, fmt), target,
                                          model_config=model_cfg, frame_size=frame_size)
  return model, params, message


def _video(seed=3):
  return np.random.default_rng(seed).normal(size=(2, FRAMES, IMAGE, IMAGE, 3)).astype(
      np.float32)


def _central_frames(video):
  """The frames a central_frame-inflated tubelet of t=2 reads: (B*T', H, W, 3)."""
  return video[:, 1::2].reshape((-1,) + video.shape[2:])


def _assert_close(ours, ref, what):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  scale = float(np.max(np.abs(ref)))
  assert scale > 0.1, (what, scale)  # a real signal, not zeros compared with zeros
  diff = float(np.max(np.abs(ours - ref)))
  assert diff <= 1e-5 * scale, f'{what}: max |diff| {diff:.3g}, feature scale {scale:.3g}'


@pytest.fixture(scope='module', params=sorted(TOWERS))
def tower(request, tmp_path_factory):
  """(name, saved directory, the library's (pooled, tokens) on the central frames)."""
  name = request.param
  cls, hf_config, _ = TOWERS[name]
  torch.manual_seed(0)
  hf_model = cls(hf_config).eval()
  _randomise(hf_model, seed=len(name))
  directory = tmp_path_factory.mktemp(name)
  hf_model.save_pretrained(directory)
  return name, directory, _reference(hf_model, _central_frames(_video())), hf_model


def test_auto_detects_a_hugging_face_directory(tower):
  assert load.detect_format(str(tower[1])) == towers.HUGGINGFACE


def test_per_frame_features_match_the_library(tower):
  name, directory, (pooled, _), _ = tower
  cfg = _model_config(TOWERS[name][2], freeze_spatial=True)
  model, params, _ = _load(cfg, directory)
  ours = helpers.run(model, params, _video(), part=models.FROZEN_PART)  # (B, T', D)
  _assert_close(np.asarray(ours).reshape(pooled.shape), pooled, f'{name} pooled')


def test_tokens_the_adapter_reads_match_the_library(tower):
  """[vector, patch tokens] per frame; registers and the class token are not patches."""
  name, directory, (pooled, tokens), _ = tower
  cfg = _model_config(TOWERS[name][2], adapter='attention', freeze_spatial=True)
  model, params, _ = _load(cfg, directory)
  ours = np.asarray(helpers.run(model, params, _video(), part=models.FROZEN_PART))
  ours = ours.reshape((-1,) + ours.shape[2:])
  num_patches = (IMAGE // PATCH) ** 2
  _assert_close(ours[:, 0], pooled, f'{name} row 0')
  _assert_close(ours[:, 1:], tokens[:, -num_patches:], f'{name} patch tokens')


def test_stage2_logits_at_init_are_the_temporal_encoder_on_the_library_features(tower):
  """Stage 2 (frozen tower, zero-initialised mlp adapter) at its first step computes the
  temporal encoder and head on exactly the library's per-frame features."""
  name, directory, (pooled, _), _ = tower
  cfg = _model_config(TOWERS[name][2], adapter='mlp', freeze_spatial=True)
  model, params, _ = _load(cfg, directory)
  rng = np.random.default_rng(5)
  params = merge.unflatten({
      k: (0.3 * rng.normal(size=v.shape)).astype(v.dtype)
      if k.startswith(('TemporalTransformer', 'cls_Temporal', 'output_projection')) else v
      for k, v in merge.flatten(params).items()})
  logits = helpers.run(model, params, _video())
  features = pooled.reshape(2, FRAMES // 2, WIDTH)
  expected = helpers.run(model, params, features, part=models.TRAINABLE_PART)
  assert float(np.max(np.abs(np.asarray(expected)))) > 0.1
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=0,
                             atol=1e-5 * float(np.max(np.abs(np.asarray(expected)))))


def test_message_reports_restored_fresh_and_unused_names(tower):
  name, directory, _, _ = tower
  _, _, message = _load(_model_config(TOWERS[name][2]), directory)
  cls = '' if name == 'siglip' else 'cls_SpatialTransformer, '
  lines = message.splitlines()
  assert lines[0] == f'Initialised from huggingface checkpoint {directory}.'
  assert lines[1] == f'  restored: SpatialTransformer, {cls}embedding'
  assert lines[2] == '  fresh init: TemporalTransformer, cls_TemporalTransformer, output_projection'
  assert '  embedding/kernel inflated 2D -> 3D (central_frame)' in lines
  if name.startswith('dinov2'):  # DINOv2's mask token (masked image modelling) is unused
    assert lines[3] == '  not used from the checkpoint: unmapped'
    assert '  1 checkpoint tensors not used: embeddings.mask_token' in lines
  else:
    assert not any('not used' in line for line in lines)


def test_a_model_of_other_switches_is_refused_naming_each(tower):
  name, directory, _, _ = tower
  cfg = _model_config(TOWERS[name][2])
  cfg.spatial_transformer.layer_norm_epsilon = 1e-3
  cfg.spatial_transformer.mlp_activation = 'gelu' if name == 'clip' else 'quick_gelu'
  with pytest.raises(ValueError) as e:
    _load(cfg, directory)
  want = TOWERS[name][1].layer_norm_eps
  assert f'config.model.spatial_transformer.layer_norm_epsilon=0.001 (the checkpoint needs {want!r})' in str(e.value)
  assert 'config.model.spatial_transformer.mlp_activation=' in str(e.value)


def test_position_embedding_resized_to_a_larger_crop(tower):
  name, directory, _, hf_model = tower
  cfg = _model_config(TOWERS[name][2])
  _, params, message = _load(cfg, directory, frame_size=(48, 64))
  pe = merge.flatten(params)['SpatialTransformer/posembed_input/pos_embedding']
  state = {k.replace('vision_model.', ''): v.detach().numpy()
           for k, v in hf_model.state_dict().items()}
  src = state.get('embeddings.position_embeddings',
                  state.get('embeddings.position_embedding.weight'))
  src = src.reshape(1, -1, WIDTH)
  has_cls = name != 'siglip'
  want = posemb.resize_spatial_posemb(src, (6, 8), has_cls=has_cls)
  np.testing.assert_array_equal(pe, want)
  assert f'resampled {src.shape} -> {want.shape}' in message


# ---- OpenCLIP ------------------------------------------------------------------------

def _open_clip_state(hf_model) -> dict:
  """A CLIPVisionModel's weights in OpenCLIP's checkpoint layout, with a text tower's
  and the projection's names beside them as a full OpenCLIP checkpoint has."""
  s = {k.replace('vision_model.', ''): v.detach().numpy().copy()
       for k, v in hf_model.state_dict().items()}
  out = {'visual.conv1.weight': s['embeddings.patch_embedding.weight'],
         'visual.class_embedding': s['embeddings.class_embedding'],
         'visual.positional_embedding': s['embeddings.position_embedding.weight'],
         'visual.proj': np.ones((WIDTH, 16), np.float32),
         'logit_scale': np.ones((), np.float32),
         'token_embedding.weight': np.ones((10, 16), np.float32)}
  for ours, theirs in (('ln_pre', 'pre_layrnorm'), ('ln_post', 'post_layernorm')):
    for leaf in ('weight', 'bias'):
      out[f'visual.{ours}.{leaf}'] = s[f'{theirs}.{leaf}']
  for i in range(LAYERS):
    p, q = f'visual.transformer.resblocks.{i}.', f'encoder.layers.{i}.'
    for leaf in ('weight', 'bias'):
      out[f'{p}attn.in_proj_{leaf}'] = np.concatenate(
          [s[f'{q}self_attn.{x}_proj.{leaf}'] for x in 'qkv'])
      for ours, theirs in (('attn.out_proj', 'self_attn.out_proj'), ('ln_1', 'layer_norm1'),
                           ('ln_2', 'layer_norm2'), ('mlp.c_fc', 'mlp.fc1'),
                           ('mlp.c_proj', 'mlp.fc2')):
        out[f'{p}{ours}.{leaf}'] = s[f'{q}{theirs}.{leaf}']
  return out


@pytest.fixture(scope='module')
def open_clip_file(tmp_path_factory):
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  cls, hf_config, _ = TOWERS['clip']
  torch.manual_seed(1)
  hf_model = cls(hf_config).eval()
  _randomise(hf_model, seed=11)
  path = tmp_path_factory.mktemp('open_clip') / 'open_clip_model.safetensors'
  st_numpy.save_file(_open_clip_state(hf_model), str(path))
  return path, _reference(hf_model, _central_frames(_video()))


def test_open_clip_features_match_the_library(open_clip_file):
  path, (pooled, tokens) = open_clip_file
  assert load.detect_format(str(path)) == towers.OPEN_CLIP
  cfg = _model_config('CLIP', adapter='attention', freeze_spatial=True)
  model, params, message = _load(cfg, path)
  ours = np.asarray(helpers.run(model, params, _video(), part=models.FROZEN_PART))
  ours = ours.reshape((-1,) + ours.shape[2:])
  _assert_close(ours[:, 0], pooled, 'open_clip pooled')
  _assert_close(ours[:, 1:], tokens[:, 1:], 'open_clip patch tokens')
  assert message.splitlines()[0] == f'Initialised from open_clip checkpoint {path}.'
  assert ('  3 checkpoint tensors not used: logit_scale, token_embedding.weight, visual.proj'
          in message.splitlines())
  assert ('  tower: OpenCLIP VisionTransformer (4 heads, quick_gelu, as config.model says: '
          'the file does not record them)') in message.splitlines()


def test_open_clip_of_exact_gelu_needs_the_model_to_say_so(open_clip_file):
  """OpenCLIP stores no activation: the weights of an exact-GELU model computed with
  quick-GELU differ, and nothing in the file can catch it, so the variant must be right.
  What the file does fix (patch bias, ln_pre) is checked."""
  path, _ = open_clip_file
  cfg = _model_config('OpenCLIP')
  cfg.patches.bias = True
  with pytest.raises(ValueError, match=r'config\.model\.patches\.bias=True \(the checkpoint '
                     r'needs False\)'):
    _load(cfg, path)


def test_timm_trunk_open_clip_is_refused(tmp_path):
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'siglip.safetensors'
  st_numpy.save_file({'visual.trunk.patch_embed.proj.weight': np.zeros((2, 3, 1, 1),
                                                                        np.float32)},
                     str(path))
  with pytest.raises(ValueError, match='timm image tower'):
    _load(_model_config('CLIP'), path)


def test_a_dual_clip_model_loads_its_image_tower(tmp_path):
  """CLIPModel (image + text towers, `vision_model.` names, `vision_config` nested in its
  config.json): the image tower loads, the text tower is reported unused."""
  config = transformers.CLIPConfig(
      vision_config=TOWERS['clip'][1].to_dict(),
      text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, vocab_size=50, max_position_embeddings=8),
      projection_dim=8)
  torch.manual_seed(2)
  hf_model = transformers.CLIPModel(config).eval()
  _randomise(hf_model, seed=4)
  hf_model.save_pretrained(tmp_path)
  model, params, message = _load(_model_config('CLIP', freeze_spatial=True), tmp_path)
  with torch.no_grad():
    frames = _central_frames(_video())
    want = hf_model.vision_model(pixel_values=torch.from_numpy(
        frames.transpose(0, 3, 1, 2))).pooler_output.numpy()
  ours = np.asarray(helpers.run(model, params, _video(), part=models.FROZEN_PART))
  _assert_close(ours.reshape(want.shape), want, 'CLIPModel pooled')
  assert 'text_model.embeddings.token_embedding.weight' in message
  assert '  tower: clip_vision_model (quick_gelu, eps 1e-05)' in message.splitlines()


def test_stage2_run_on_a_siglip_tower_with_one_flag(tmp_path):
  """The CLI trains stage 2 on a Hugging Face tower given by path: the tower's weights
  are the run's frozen spatial encoder, unchanged by training."""
  from tests import trainer_utils as tu  # pylint: disable=g-import-not-at-top
  hf_model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
      hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
      image_size=32, patch_size=8)).eval()
  _randomise(hf_model, seed=9)
  hf_model.save_pretrained(tmp_path / 'siglip')
  config = tu.write_config(tmp_path, tu.make_dataset(tmp_path / 'data'))
  workdir = tmp_path / 'run'
  proc = tu.run_main(config, workdir, f'--config.init_from.checkpoint_path={tmp_path}/siglip',
                     '--config.model.spatial_transformer.pooling=map',
                     '--config.model.freeze_spatial=True', '--config.model.adapter.type=mlp',
                     '--config.stage=stage2', '--config.num_training_steps=2',
                     '--config.checkpoint_steps=2')
  assert 'Initialised from huggingface checkpoint' in proc.stdout + proc.stderr
  final = tu.final_params(str(workdir))
  state = hf_model.state_dict()
  np.testing.assert_array_equal(final['SpatialTransformer/MAPHead_0/probe'],
                                state['head.probe'].detach().numpy())
  np.testing.assert_array_equal(
      final['SpatialTransformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'],
      state['encoder.layers.0.mlp.fc1.weight'].detach().numpy().T)
  # predict rebuilds the model from the run's config.json: the tower's switches with it.
  from vivit_adapter import predict  # pylint: disable=g-import-not-at-top
  saved, model, params, _ = predict.load_run(str(workdir))
  assert saved.model.spatial_transformer.pooling == 'map'
  clip = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  predict.check_fits(model, params, clip, str(workdir))
  probs = predict.probabilities(model, params, clip)
  assert probs.shape == (params['output_projection']['kernel'].shape[-1],)
  assert abs(float(probs.sum()) - 1.0) < 1e-5


@pytest.fixture(scope='module')
def siglip(tmp_path_factory):
  cls, hf_config, _ = TOWERS['siglip']
  hf_model = cls(hf_config).eval()
  _randomise(hf_model, seed=21)
  directory = tmp_path_factory.mktemp('siglip_mean')
  hf_model.save_pretrained(directory)
  return directory, _reference(hf_model, _central_frames(_video()))


def test_siglip_into_mean_pooling_leaves_its_map_head_unused(siglip):
  directory, (_, tokens) = siglip
  cfg = _model_config('SigLIP', freeze_spatial=True, **{'spatial_transformer.pooling': 'mean'})
  model, params, message = _load(cfg, directory)
  ours = np.asarray(helpers.run(model, params, _video(), part=models.FROZEN_PART))
  _assert_close(ours.reshape(-1, WIDTH), tokens.mean(axis=1), 'siglip mean of patches')
  assert '  not used from the checkpoint: unmapped' in message.splitlines()
  assert ('  11 checkpoint tensors not used: head.attention.in_proj_bias, '
          'head.attention.in_proj_weight,') in message


def test_siglip_into_a_class_token_model_is_refused(siglip):
  directory, _ = siglip
  cfg = _model_config('SigLIP', **{'spatial_transformer.pooling': ''})
  with pytest.raises(ValueError, match=r"has no class token, but "
                     r"config\.model\.spatial_transformer\.pooling='': set it to 'map'"):
    _load(cfg, directory)


def test_bfloat16_and_float16_safetensors_decode_exactly(tmp_path):
  """Released towers are often stored in bfloat16, which safetensors' NumPy API cannot
  read: such a file is decoded from its header, every value as torch stored it."""
  from safetensors import torch as st_torch  # pylint: disable=g-import-not-at-top
  gen = torch.Generator().manual_seed(0)
  tensors = {'a': torch.randn(3, 4, generator=gen).to(torch.bfloat16),
             'b': torch.randn(5, generator=gen).to(torch.float16),
             'c': torch.randn(2, 2, generator=gen)}
  path = str(tmp_path / 'mixed.safetensors')
  st_torch.save_file(tensors, path)
  got = towers._read_safetensors(path)  # pylint: disable=protected-access
  assert sorted(got) == ['a', 'b', 'c']
  for name, value in tensors.items():
    assert got[name].shape == tuple(value.shape)
    np.testing.assert_array_equal(got[name].astype(np.float32), value.float().numpy())
