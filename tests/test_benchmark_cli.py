"""Tests for vivit_adapter.benchmark (compiled memory, step time, frame search).

A 2-layer Ti model at 32 px keeps every compile to a second or two; the figures are
compile-only except in the one CLI run that times a step.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_adapter import benchmark
from vivit_adapter.benchmarks import frame_search, step_cases, step_report
from vivit_adapter.models import create_model
from vivit_adapter.train_lib import optimizers, parallel, trainer

TINY = (('spatial_transformer.num_layers', 2), ('temporal_transformer.num_layers', 1))
SPATIAL = {'embedding', 'cls_SpatialTransformer', 'SpatialTransformer'}
# The CLI run's model: one layer per encoder (its cases compile, run and plot as the 2-layer
# ones would, in less time).
TINY_FLAGS = 'spatial_transformer.num_layers=1,temporal_transformer.num_layers=1'


def tiny_case(mode='stage2', frames=8, **kw):
  fields = dict(variant='Ti/16x2', mode=mode, frames=frames, batch=2, resolution=32,
                num_classes=10, chunk_size=2, model_overrides=TINY)
  fields.update(kw)
  return step_cases.Case(**fields)


@pytest.fixture(scope='module')
def figures():
  """Compile-only figures of a few tiny cases, shared by the tests below."""
  cases = {'baseline8': tiny_case('baseline'), 'stage2_8': tiny_case('stage2'),
           'stage2_16': tiny_case('stage2', 16)}
  return {name: step_cases.compile_case(case) for name, case in cases.items()}


def trainer_state_and_step(case):
  """The trainer's own step-0 state and jitted step for `case`, from
  `trainer.setup_state` on a one-device mesh (the benchmark's figures are per device)."""
  config = step_cases.case_config(case)
  model = create_model(config.model, case.num_classes, config.dataset.normalization)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
  state, parts = trainer.setup_state(config, model, mesh, case.num_classes,
                                     step_cases.SCHEDULE_STEPS_PER_EPOCH,
                                     step_cases.SCHEDULE_TOTAL_STEPS)
  batch = parallel.to_global(jax.device_get(step_cases._real_batch(case, step_cases.build(case), 0)), mesh)
  return state, parts, parts.jit_step(mesh), batch


def test_memory_equals_the_trainers_own_compiled_step(figures):
  state, parts, jitted, batch = trainer_state_and_step(tiny_case('stage2'))
  m = jitted.lower(state, batch).compile().memory_analysis()
  got = figures['stage2_8']['memory']
  assert got['temp'] == m.temp_size_in_bytes
  assert got['argument'] == m.argument_size_in_bytes
  assert got['output'] == m.output_size_in_bytes
  assert got['total'] == (m.temp_size_in_bytes + m.argument_size_in_bytes
                          + m.output_size_in_bytes - m.alias_size_in_bytes)
  assert figures['stage2_8']['params'] == optimizers.count_params(state.params, parts.frozen)


def test_benchmark_step_trains_exactly_like_the_trainers_step():
  case = tiny_case('stage2')
  state, parts, jitted, batch = trainer_state_and_step(case)
  built = step_cases.build(case)
  assert built.parts.frozen == parts.frozen and set(parts.frozen) == SPATIAL
  describe = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert describe(built.state) == describe(state)
  start = jax.device_get(state)
  bench_state, bench_batch = jax.tree.map(jnp.asarray, (start, jax.device_get(batch)))
  # Three steps: the warm-up's learning rate is 0 at step 0, and the head starts at
  # zero, so the encoders only get a gradient once step 1 has moved the head.
  for _ in range(3):
    state, metrics = jitted(state, batch)
    bench_state, bench_metrics = built.jitted(bench_state, bench_batch)
    assert jax.device_get(bench_metrics) == jax.device_get(metrics)
  assert float(metrics['learning_rate']) > 0
  trained, bench = jax.device_get((state.params, bench_state.params))
  moved = set()
  for k in trained:
    for a, b, c in zip(jax.tree.leaves(trained[k]), jax.tree.leaves(bench[k]),
                       jax.tree.leaves(start.params[k])):
      np.testing.assert_array_equal(a, b, err_msg=k)
      if not np.array_equal(a, c):
        moved.add(k)
  assert not moved & SPATIAL and {'TemporalTransformer', 'output_projection'} <= moved


def test_stage2_needs_less_than_baseline(figures):
  base, stage2 = figures['baseline8'], figures['stage2_8']
  assert stage2['memory']['temp'] < base['memory']['temp']
  assert stage2['memory']['total'] < base['memory']['total']
  assert base['params']['frozen'] == 0 and stage2['params']['frozen'] > 0
  # From 8 to 16 frames the arguments grow by the extra uint8 video (1 byte a pixel:
  # the model normalises on the device) and the 4 extra temporal position embeddings
  # (width 192) with their momentum buffer.
  grown = figures['stage2_16']['memory']['argument'] - stage2['memory']['argument']
  assert grown == 2 * 8 * 32 * 32 * 3 * 1 + 2 * 4 * 192 * 4


def test_device_memory_is_the_accelerators_own_else_physical_memory():
  class Gpu:
    def memory_stats(self):
      return {'bytes_limit': 16 * 2**30, 'bytes_in_use': 0}

  class Cpu:
    def memory_stats(self):
      return None

  assert benchmark.device_memory_gib(Gpu()) == 16.0
  physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  assert benchmark.device_memory_gib(Cpu()) == physical


def test_largest_fitting_exponential_then_binary():
  limit = 37  # fits while frames <= 37; step 2 -> answer 36
  frames, probes = frame_search.largest_fitting(lambda f: f <= limit, 2, 4096)
  assert frames == 36
  assert [f for f, _ in probes[:6]] == [2, 4, 8, 16, 32, 64]
  assert len(probes) <= 6 + 5
  assert frame_search.largest_fitting(lambda f: False, 2, 64) == (0, [(2, False)])
  assert frame_search.largest_fitting(lambda f: True, 8, 100)[0] == 96
  with pytest.raises(ValueError, match='search_max_frames=4 at least 8'):
    frame_search.largest_fitting(lambda f: True, 8, 4)


def test_frame_search_returns_the_largest_count_that_fits(figures):
  # A budget between the 8- and 16-frame figures: 8, 10, ... 14 are candidates.
  low = figures['stage2_8']['memory']['total']
  high = figures['stage2_16']['memory']['total']
  budget = (low + high) // 2
  # The fixture's compiles are probes 8 and 16 of the search (compiling is deterministic).
  cache = {tiny_case('stage2', 8): figures['stage2_8'],
           tiny_case('stage2', 16): figures['stage2_16']}
  found = frame_search.search_case(tiny_case('stage2'), budget, 64, cache)
  best = found['frames']
  assert 8 <= best < 16
  assert cache[tiny_case('stage2', best)]['memory']['total'] <= budget
  after = cache.get(tiny_case('stage2', best + 2)) or step_cases.compile_case(
      tiny_case('stage2', best + 2))
  assert after['memory']['total'] > budget
  assert [p['frames'] for p in found['probes']][:4] == [2, 4, 8, 16]


def test_bad_inputs_name_the_flag():
  with pytest.raises(ValueError, match=r"--frames=9 in mode stage2 must be a multiple of 2"):
    step_cases.check_case(tiny_case('stage2', 9))
  with pytest.raises(ValueError, match=r'--frames=12 in mode stage2\+chunked must be a '
                                       r'multiple of 8 \(the tubelet length x --chunk_size'):
    step_cases.check_case(tiny_case('stage2+chunked', 12, chunk_size=4))
  with pytest.raises(ValueError, match=r"--modes: unknown mode 'stage3'"):
    step_cases.check_case(tiny_case('stage3'))
  with pytest.raises(ValueError, match=r'--resolution=30 must be a multiple of the patch size 16'):
    step_cases.check_case(tiny_case(resolution=30))
  with pytest.raises(ValueError, match="Unknown model variant 'X/16x2'"):
    step_cases.check_case(tiny_case(variant='X/16x2'))
  with pytest.raises(ValueError, match='--batch=0 must be positive'):
    step_cases.check_case(tiny_case(batch=0))
  with pytest.raises(ValueError, match=r'--frames=8,a: expected integers'):
    benchmark.parse_frames(['8', 'a'])
  with pytest.raises(ValueError, match=r"'layers' is not KEY=VALUE"):
    benchmark.parse_overrides(['layers'])
  with pytest.raises(ValueError, match=r"model override 'spatial_transformer.depth'"):
    benchmark.make_cases(['Ti/16x2'], ['stage2'], [8], 2, 32, 10, 2,
                         benchmark.parse_overrides(['spatial_transformer.depth=2']))


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'vivit_adapter.benchmark', *args],
                        capture_output=True, text=True, timeout=600)


def test_cli_writes_json_markdown_and_plots(tmp_path):
  out = tmp_path / 'res' / 'tiny'
  proc = _run_cli('--variants=Ti/16x2', '--resolution=32', '--frames=2,4', '--batch=2',
                  '--modes=baseline,stage2', '--num_classes=10',
                  f'--model_overrides={TINY_FLAGS}', '--time', '--steps=1', '--warmup=1',
                  '--fit_budget_gib=1', '--search_max_frames=4', f'--out={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / 'res' / 'tiny.json').read_text())
  assert '--frames=2,4' in result['meta']['command']
  rows = {(r['mode'], r['frames']): r for r in result['cases']}
  assert set(rows) == {('baseline', 2), ('baseline', 4), ('stage2', 2), ('stage2', 4)}
  stage2 = rows[('stage2', 4)]
  assert stage2['timing']['step_s'] > 0 and len(stage2['timing']['step_times_s']) == 1
  assert stage2['memory_x_baseline'] == pytest.approx(
      stage2['memory']['total'] / rows[('baseline', 4)]['memory']['total'])
  assert stage2['step_x_baseline'] > 0
  assert {s['mode'] for s in result['search']} == {'baseline', 'stage2'}
  for s in result['search']:  # 1 GiB fits 4 frames of this tiny model
    assert s['frames'] == 4 and s['reached_max']
  md = (tmp_path / 'res' / 'tiny.md').read_text()
  assert '| Ti/16x2 | stage2 | 4 |' in md and 'largest frames' in md
  for png in ('tiny_memory.png', 'tiny_step_time.png'):
    assert (tmp_path / 'res' / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_bad_flag_exits_with_the_reason(tmp_path):
  proc = _run_cli('--variants=Ti/16x2', '--frames=7', '--modes=stage2',
                  f'--out={tmp_path}/x')
  assert proc.returncode != 0
  assert '--frames=7 in mode stage2 must be a multiple of 2' in proc.stderr
  assert not (tmp_path / 'x.json').exists()


def test_markdown_ratios_use_the_same_frames_baseline():
  rows = [{'variant': 'B', 'mode': m, 'frames': 8, 'batch': 1, 'resolution': 32,
           'memory': {'temp': t, 'argument': 0, 'output': 0, 'total': t},
           'params': {'trainable': 1, 'frozen': 0}, 'timing': {'step_s': s}}
          for m, t, s in (('baseline', 100, 2.0), ('stage2', 25, 0.5))]
  step_report.add_ratios(rows)
  assert rows[1]['memory_x_baseline'] == 0.25 and rows[1]['step_x_baseline'] == 0.25
  assert '| B | stage2 | 8 |' in step_report.cases_table(rows)


def test_adapters_measure_each_stage2_mode_once_per_adapter_type():
  cases = benchmark.make_cases(['Ti/16x2'], ['baseline', 'stage2+cached'], [4, 8], 2, 32,
                               10, 2, TINY, adapters=['attention', 'mlp'])
  assert [(c.mode, c.frames, dict(c.model_overrides).get('adapter.type')) for c in cases] == [
      ('baseline', 4, None), ('baseline', 8, None), ('stage2+cached', 4, 'attention'),
      ('stage2+cached', 8, 'attention'), ('stage2+cached', 4, 'mlp'), ('stage2+cached', 8, 'mlp')]
  # The adapter comes after the overrides, so it wins over an adapter.type among them.
  (case,) = benchmark.make_cases(['Ti/16x2'], ['stage2'], [8], 2, 32, 10, 2,
                                 TINY + (('adapter.type', 'none'),), adapters=['mlp'])
  assert step_cases.case_config(case).model.adapter.type == 'mlp'
  with pytest.raises(ValueError, match=r"--adapters: unknown adapter type\(s\) \['gru'\]"):
    benchmark.make_cases(['Ti/16x2'], ['stage2'], [8], 2, 32, 10, 2, adapters=['gru'])
  # The table names the adapter where it is not the mode's own.
  rows = [{'variant': 'B', 'mode': m, 'adapter': a, 'frames': 8, 'batch': 1,
           'resolution': 32, 'memory': {'temp': 1, 'argument': 0, 'output': 0, 'total': 1},
           'params': {'trainable': 1, 'frozen': 0}, 'timing': {'step_s': 1.0}}
          for m, a in (('baseline', 'none'), ('stage2+cached', 'attention'),
                       ('stage2+cached', 'mlp'))]
  step_report.add_ratios(rows)
  table = step_report.cases_table(rows)
  assert '| B | stage2+cached | 8 |' in table and '| B | stage2+cached (mlp) | 8 |' in table
  assert '| B | baseline | 8 |' in table


# The chunked attention adapter (models/vivit.py) that these measurements motivated;
# these belong with tests/test_models.py, which is another engineer's file.

def test_chunked_attention_adapter_equals_unchunked():
  plain = create_model(step_cases.case_config(tiny_case('stage2')).model, 10)
  chunked = create_model(step_cases.case_config(tiny_case('stage2+chunked')).model, 10)
  video = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 32, 32, 3))
  params = jax.jit(plain.init)(jax.random.PRNGKey(1), video)['params']
  assert (jax.tree.structure(jax.eval_shape(chunked.init, jax.random.PRNGKey(1), video)['params'])
          == jax.tree.structure(params))
  # Non-zero 'up' projections, so the adapter's output actually matters.
  params = jax.tree.map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(3), x.shape), params)
  # Jitted: op-by-op dispatch of the chunk loop is far slower on CPU than compiling it.
  def grads(model):
    loss = lambda p: (model.apply({'params': p}, video, train=True) ** 2).sum()
    return jax.jit(jax.grad(loss))(params)
  apply = lambda model: jax.jit(lambda p: model.apply({'params': p}, video))(params)
  assert jnp.abs(apply(plain) - apply(chunked)).max() < 1e-5
  for a, b in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(chunked))):
    assert jnp.abs(a - b).max() < 1e-4


def test_chunked_stage2_temp_grows_less_with_frames(figures):
  chunked = {f: step_cases.compile_case(tiny_case('stage2+chunked', f))['memory']['temp']
             for f in (8, 16)}
  plain_growth = figures['stage2_16']['memory']['temp'] - figures['stage2_8']['memory']['temp']
  assert chunked[16] - chunked[8] < 0.5 * plain_growth, (chunked, plain_growth)


def test_model_overrides_win_over_the_mode_and_adapter_keys_skip_the_baseline():
  overrides = TINY + (('adapter.type', 'mlp'), ('adapter.hidden_size', 8))
  cached = step_cases.build(tiny_case('stage2+cached', model_overrides=overrides))
  assert cached.config.model.adapter.type == 'mlp'
  assert cached.config.model.adapter.hidden_size == 8
  assert cached.batch['inputs'].shape == (2, 4, 192)  # an mlp adapter reads pooled vectors
  baseline = step_cases.case_config(tiny_case('baseline', model_overrides=overrides))
  assert baseline.model.adapter.type == 'none' and not baseline.model.freeze_spatial


def test_cached_mode_steps_on_stored_features_and_times_extraction():
  case = tiny_case('stage2+cached')
  built = step_cases.build(case)
  # 32 px / 16 px patches = 4 tokens + CLS per temporal index, 8 frames / 2 = 4 indices.
  assert built.batch['inputs'].shape == (2, 4, 5, 192)  # Ti's width
  assert built.batch['inputs'].dtype == jnp.bfloat16
  compiled, figures = step_cases.compile_built(built)
  stage2 = step_cases.compile_case(tiny_case('stage2'))
  assert figures['params'] == stage2['params']  # same trainable/frozen split
  # The batch is bf16 features, not a uint8 video; the frozen pass holds no memory at
  # the step's peak in either mode, so temp is not smaller at this size.
  video_bytes, feature_bytes = 2 * 8 * 32 * 32 * 3 * 1, 2 * 4 * 5 * 192 * 2
  assert (stage2['memory']['argument'] - figures['memory']['argument']
          == video_bytes - feature_bytes)
  timing = step_cases.time_case(case, built, compiled, steps_timed=2, warmup=1)
  assert np.isfinite(timing['loss']) and timing['step_s'] > 0
  extraction = step_cases.time_extraction(case, built, steps_timed=2, warmup=1)
  assert extraction['extract_s_per_clip'] > 0 and len(extraction['extract_times_s']) == 2


def test_dials_measure_each_stage2_mode_once_per_k():
  # --trainable_spatial_layers=0,1,2: every stage2 mode once per k (the baseline once),
  # the cached step reading every token below the dial and training k more layers.
  cases = benchmark.make_cases(['Ti/16x2'], ['baseline', 'stage2+cached'], [8], 2, 32, 10,
                               2, TINY, adapters=['mlp'], dials=[0, 1, 2])
  assert [(c.mode, dict(c.model_overrides).get('trainable_spatial_layers')) for c in cases
          ] == [('baseline', None), ('stage2+cached', 0), ('stage2+cached', 1),
                ('stage2+cached', 2)]
  built = [step_cases.build(c) for c in cases[1:]]
  width = built[0].config.model.hidden_size
  # k = 0 with the mlp adapter stores the pooled vector; k > 0 every token (1 + 2x2).
  assert [b.batch['inputs'].shape for b in built] == [
      (2, 4, width), (2, 4, 5, width), (2, 4, 5, width)]
  counts = [optimizers.count_params(b.state.params, b.parts.frozen) for b in built]
  per_block = counts[2]['trainable'] - counts[1]['trainable']
  assert per_block > 0 and counts[1]['trainable'] - counts[0]['trainable'] > per_block  # + norm
  assert len({c['trainable'] + c['frozen'] for c in counts}) == 1
  with pytest.raises(ValueError, match=r'trainable_spatial_layers=3 must be in \[0, 2\]'):
    benchmark.make_cases(['Ti/16x2'], ['stage2'], [8], 2, 32, 10, 2, TINY, dials=[3])
  rows = [{'mode': 'stage2+cached', 'adapter': 'mlp', 'trainable_spatial_layers': 2},
          {'mode': 'stage2+cached', 'model_overrides': {'trainable_spatial_layers': 1}},
          {'mode': 'stage2'}]
  assert [step_report.mode_label(r) for r in rows] == [
      'stage2+cached (mlp, k=2)', 'stage2+cached (k=1)', 'stage2']
