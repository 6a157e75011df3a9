"""Tests for vivit_adapter.benchmarks.torch_reference and torch_compare.

The PyTorch reference must compute the same function and gradients as the Flax model,
and the harness must time the same training in both frameworks.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.benchmarks import torch_compare
from vivit_adapter.benchmarks import torch_reference

NUM_CLASSES = 5
VIDEO_SHAPE = (2, 8, 16, 16, 3)


def _tiny_model_config():
  cfg = configs.base_config().model
  cfg.hidden_size = 32
  cfg.patches.size = (4, 4, 2)
  for enc in (cfg.spatial_transformer, cfg.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 2, 2, 64
  return cfg


def _random_params(flax_model, seed=0):
  """Random parameters of the right shapes without compiling `init` (slow on CPU).

  Every leaf is random, so the zero-initialised head and CLS tokens are non-zero too;
  LayerNorm scales stay near 1 so activations keep a sensible size.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(flax_model.init, jax.random.PRNGKey(0),
                          jnp.zeros(VIDEO_SHAPE))['params']
  def draw(path, leaf):
    offset = 1.0 if path[-1].key == 'scale' else 0.0
    return (offset + 0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope='module')
def tiny():
  """Flax model, random params, video, the torch model holding the same params."""
  cfg = _tiny_model_config()
  flax_model = models.create_model(cfg, NUM_CLASSES)
  video = jax.random.normal(jax.random.PRNGKey(1), VIDEO_SHAPE)
  params = _random_params(flax_model)
  torch_model = torch_reference.from_model_config(cfg, NUM_CLASSES, VIDEO_SHAPE[1:4])
  torch_reference.load_flax_params(torch_model, params)
  return flax_model, params, video, torch_model


def test_logits_match_flax(tiny):
  flax_model, params, video, torch_model = tiny
  expected = np.asarray(jax.jit(flax_model.apply)({'params': params}, video))
  with torch.no_grad():
    got = torch_model(torch.from_numpy(np.array(video))).numpy()
  assert np.abs(expected).max() > 0.1  # the perturbed head makes the check meaningful
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_gradients_match_flax(tiny):
  """One training step computes the same gradient: the benchmark times the same work."""
  flax_model, params, video, torch_model = tiny
  labels = np.array([1, 3])

  def loss_fn(p):
    logits = flax_model.apply({'params': p}, video, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  torch_model.zero_grad()
  torch_loss = torch.nn.functional.cross_entropy(
      torch_model(torch.from_numpy(np.array(video))), torch.from_numpy(labels))
  torch_loss.backward()
  np.testing.assert_allclose(torch_loss.item(), float(loss), atol=1e-5)
  expected = torch_reference.flax_to_torch_state_dict(grads)
  for name, param in torch_model.named_parameters():
    np.testing.assert_allclose(param.grad.numpy(), expected[name].numpy(),
                               atol=1e-4, rtol=1e-3, err_msg=name)


def test_state_dict_layout():
  """Hand-checked layouts: conv (t,h,w,c,D)->(D,c,t,h,w), Dense (in,out)->(out,in)."""
  params = _random_params(models.create_model(_tiny_model_config(), NUM_CLASSES))
  state = torch_reference.flax_to_torch_state_dict(params)
  kernel = params['embedding']['kernel']  # (t, h, w, c, D)
  assert state['embedding.weight'][7, 2, 1, 3, 0] == np.float32(kernel[1, 3, 0, 2, 7])
  mha = params['SpatialTransformer']['encoderblock_1']['MultiHeadDotProductAttention_0']
  qkv = state['spatial.blocks.1.attn.qkv.weight'].numpy()  # (3D, D)
  # key, head 1, dim 5 of 16 is output row D + 16 + 5; input column 4
  assert qkv[32 + 16 + 5, 4] == np.float32(mha['key']['kernel'][4, 1, 5])
  proj = state['spatial.blocks.1.attn.proj.weight'].numpy()
  assert proj[9, 16 + 3] == np.float32(mha['out']['kernel'][1, 3, 9])
  head = params['output_projection']['kernel']
  assert state['head.weight'][4, 30] == np.float32(head[30, 4])


def test_load_rejects_adapter_params_by_name(tiny):
  _, params, _, torch_model = tiny
  with pytest.raises(ValueError, match=r"Extra: \['Adapter'\]"):
    torch_reference.load_flax_params(torch_model, {**params, 'Adapter': {}})


def test_load_rejects_other_resolution(tiny):
  _, params, _, _ = tiny
  other = torch_reference.from_model_config(_tiny_model_config(), NUM_CLASSES, (8, 32, 32))
  with pytest.raises(ValueError, match=r'spatial.pos_embedding: flax gives \(1, 17, 32\), '
                     r'torch model has \(1, 65, 32\)'):
    torch_reference.load_flax_params(other, params)


def test_from_model_config_rejects_what_it_does_not_implement():
  cfg = _tiny_model_config()
  cfg.adapter.type = 'attention'
  cfg.freeze_spatial = True
  with pytest.raises(ValueError, match=r"config.model.adapter.type='attention' \(needs "
                     r"'none'\); config.model.freeze_spatial=True \(needs False\)"):
    torch_reference.from_model_config(cfg, NUM_CLASSES, VIDEO_SHAPE[1:4])




def test_compare_trains_the_same_model_in_both_frameworks():
  result = torch_compare.compare(_tiny_model_config(), NUM_CLASSES, frames=8,
                                 resolution=16, batch=2, steps=2, warmup=1)
  jax_run, torch_run = result['frameworks']['jax'], result['frameworks']['torch']
  trainer_run = result['frameworks']['jax (trainer step)']
  # The trainer's step starts from the same parameters and batch: the same first loss.
  np.testing.assert_allclose(trainer_run['losses'][0], np.log(NUM_CLASSES), rtol=1e-6)
  assert len(trainer_run['losses']) == 3 and trainer_run['ms_per_step'] > 0
  assert result['ratio_trainer_step_over_torch'] == pytest.approx(
      trainer_run['ms_per_step'] / torch_run['ms_per_step'])
  # The head starts at zero: the first loss is log(num_classes) exactly, and later ones
  # differ from it only if the update step really changed the parameters.
  np.testing.assert_allclose(jax_run['losses'][0], np.log(NUM_CLASSES), rtol=1e-6)
  assert len(torch_run['losses']) == 3
  assert abs(torch_run['losses'][2] - np.log(NUM_CLASSES)) > 1e-3
  assert result['max_loss_diff_torch'] < 1e-4
  assert result['ratio_jax_over_torch'] == pytest.approx(
      jax_run['ms_per_step'] / torch_run['ms_per_step'])
  table = torch_compare.format_table(result).splitlines()
  assert [row.split('|')[1].strip() for row in table[2:]] == [
      'jax (trainer step)', 'jax', 'torch']
  text = torch_compare.report_markdown(dict(result, load_average=[1.0, 2.0, 3.0]), 'cmd')
  assert text.startswith('Command: `cmd`')
  assert f'* jax / torch = {result["ratio_jax_over_torch"]:.3f} (max loss difference' in text
  assert 'XLA_FLAGS=' in text and 'load average at the end [1.0, 2.0, 3.0]' in text
  assert result['dtype'] == 'float32' and ', float32: end-to-end train step on' in text


def test_bfloat16_compare_trains_both_in_bfloat16():
  """bfloat16 against torch.autocast: the same losses to bfloat16's precision, and the
  JAX step really computes in bfloat16 (its losses are not float32's)."""
  kwargs = dict(frames=8, resolution=16, batch=2, steps=2, warmup=1, runners=['jax', 'torch'])
  bf16 = torch_compare.compare(_tiny_model_config(), NUM_CLASSES, dtype='bfloat16', **kwargs)
  f32 = torch_compare.compare(_tiny_model_config(), NUM_CLASSES, **kwargs)
  assert bf16['dtype'] == 'bfloat16'
  assert bf16['max_loss_diff_torch'] < 0.05
  jax_bf16, jax_f32 = bf16['frameworks']['jax']['losses'], f32['frameworks']['jax']['losses']
  assert max(abs(a - b) for a, b in zip(jax_bf16[1:], jax_f32[1:])) > 1e-6
  torch_bf16, torch_f32 = (r['frameworks']['torch']['losses'] for r in (bf16, f32))
  assert max(abs(a - b) for a, b in zip(torch_bf16[1:], torch_f32[1:])) > 1e-6
  with pytest.raises(ValueError, match='choose float32 or bfloat16'):
    torch_compare.compare(_tiny_model_config(), NUM_CLASSES, dtype='float16', **kwargs)


def test_compare_runs_only_the_chosen_runners():
  result = torch_compare.compare(_tiny_model_config(), NUM_CLASSES, frames=8,
                                 resolution=16, batch=2, steps=1, warmup=0,
                                 runners=['torch'])
  assert list(result['frameworks']) == ['torch']
  assert not any(k.startswith('ratio') for k in result)
  with pytest.raises(ValueError, match=r"--runners=torch,tf: choose some of \('trainer', "):
    torch_compare.compare(_tiny_model_config(), NUM_CLASSES, frames=8, resolution=16,
                          batch=2, steps=1, warmup=0, runners=['torch', 'tf'])


def test_time_interleaved_warms_up_in_turn_times_round_robin_drops_failures():
  calls = []

  def runner(name, fail_at=None):
    def run():
      calls.append(name)
      if len([c for c in calls if c == name]) == fail_at:
        raise RuntimeError('no compiler')
      return 1.0
    return run

  out = torch_compare.time_interleaved(
      {'a': runner('a'), 'b': runner('b'), 'c': runner('c', fail_at=3)}, warmup=2, steps=2)
  assert calls == ['a', 'a', 'b', 'b', 'c', 'c', 'a', 'b', 'c', 'a', 'b']
  assert out['c']['error'] == 'RuntimeError: no compiler' and not out['c']['step_s']
  assert len(out['a']['step_s']) == 2 and len(out['a']['warmup_s']) == 2


def test_rounds_alternate_one_process_per_runner(monkeypatch):
  """alternate_processes: jax, torch, jax, torch, each a child; one merged result.

  The child processes are stood in for by in-process `compare` runs (a real child
  re-imports JAX and torch and compiles: a minute for four of them), writing the JSON a
  child writes."""
  calls = []

  def fake_run(cmd, check, stdout):
    assert cmd[1:3] == ['-m', 'vivit_adapter.benchmarks.torch_compare'] and check
    runner = [a for a in cmd if a.startswith('--runners=')][0].split('=')[1]
    out = [a for a in cmd if a.startswith('--out=')][0].split('=', 1)[1]
    calls.append((runner, [a for a in cmd[3:] if a.startswith('--frames')]))
    result = torch_compare.compare(_tiny_model_config(), NUM_CLASSES, frames=8,
                                   resolution=16, batch=2, steps=2, warmup=1,
                                   runners=[runner])
    with open(out + '.json', 'w') as f:
      json.dump(result, f)

  monkeypatch.setattr(torch_compare.subprocess, 'run', fake_run)
  result = torch_compare.alternate_processes(['--frames=8'], ['jax', 'torch'], 2,
                                             {'rounds': 2})
  assert calls == [('jax', ['--frames=8']), ('torch', ['--frames=8'])] * 2
  assert result['rounds'] == 2 and set(result['frameworks']) == {'jax', 'torch'}
  for name in ('jax', 'torch'):
    entry = result['frameworks'][name]
    assert len(entry['step_s']) == 4 and len(result['round_ms'][name]) == 2
    assert entry['ms_per_step'] == pytest.approx(1e3 * np.median(entry['step_s']))
  assert result['ratio_jax_over_torch'] == pytest.approx(
      result['frameworks']['jax']['ms_per_step'] / result['frameworks']['torch']['ms_per_step'])
  assert result['max_loss_diff_torch'] < 1e-4  # both children trained the same model
  text = torch_compare.report_markdown(dict(result, load_average=[1, 1, 1]), 'cmd')
  assert 'the processes alternated 2 times' in text
