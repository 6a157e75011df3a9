"""Tests for the frames study (vivit_adapter.studies.frames, frames_report, frames_cost and
the CLI vivit_adapter.frames_study): the plan's runs and strides, the steps' growth rule
(on stand-in runs), the report's arithmetic against hand-computed values, --plan_only
against a hand count, and one end-to-end --quick study through the real trainer and
feature cache."""

import json
import os

import jax
import numpy as np
import pytest

from vivit_adapter import frames_study
from vivit_adapter.studies import frames
from vivit_adapter.studies import frames_cost
from vivit_adapter.studies import frames_report
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation.plan import Schedule, Study
from tests.helpers import fake_summary

PLAN = frames.make_plan(quick=False, adapter_width=32)
CHOICE = {'baseline': Schedule(3e-3, 1200, 50), 'stage1': Schedule(1e-3, 1800, 50),
          'stage2_k0': Schedule(3e-3, 600, 50), 'stage2_k1': Schedule(1e-3, 1200, 50)}
STUDY = Study('w', 'd', (), 'i.npz')


def test_the_data_is_the_long_events_variant():
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  data = frames.synthetic_data(quick=False)
  assert data['classes'] == list(synthetic.VARIANTS['long_events'].classes)
  assert data['num_frames'] == synthetic.LONG_EVENTS_FRAMES == frames.CLIP_FRAMES == 128


def test_every_frame_count_reads_the_whole_clip_and_caches_per_frame_count():
  assert (PLAN.frames, PLAN.routes) == ((32, 64, 128), ('baseline', 'stage1', 'stage2_k0',
                                                         'stage2_k1', 'stage2_b_k0'))
  assert PLAN.recipes == (('0', 'stage2_k0'), ('1', 'stage2_k1'), ('b0', 'stage2_b_k0'))
  assert [PLAN.stride(f) for f in (8, 32, 64, 128)] == [16, 4, 2, 1]
  choice = dict(CHOICE, stage2_b_k0=Schedule(1e-3, 600, 50))
  schedules = {f: {r: choice[r] for r in ('baseline', 'stage2_k0', 'stage2_k1', 'stage2_b_k0')}
               for f in PLAN.frames}
  rows = {r.name: r for r in frames.make_rows(PLAN, choice, schedules)}
  assert list(rows) == [f'{n}_{f}f' for f in (32, 64, 128)
                        for n in ('baseline', 'recipe_k0', 'recipe_k1', 'recipe_b_k0')]
  stage1 = 'stage1_8f_lr0.001_s1800_w50'
  assert [r.key for r in rows['recipe_k1_128f'].runs] == [
      stage1, f'{stage1}_dial1_128f__stage2_mlp_lr0.001_s1200_w50']
  # One stage 1 for every frame count and dial; a cache per frame count and dial.
  assert {r.runs[0].key for n, r in rows.items() if n.startswith('recipe_k')} == {stage1}
  assert len({r.runs[-1].cache for n, r in rows.items() if n.startswith('recipe_k')}) == 6
  # The b recipe's stage 1 is the 32-frame baseline row's own run, at every frame count.
  base32 = 'baseline_32f_lr0.003_s1200_w50'
  assert rows['baseline_32f'].runs[0].key == base32
  assert [r.key for r in rows['recipe_b_k0_128f'].runs] == [
      base32, f'{base32}_128f__stage2_mlp_lr0.001_s600_w50']
  assert {r.runs[0].key for n, r in rows.items() if n.startswith('recipe_b')} == {base32}
  runner = frames.FramesRunner(PLAN, STUDY, train=False)
  config = runner.run_config(rows['recipe_k1_64f'].runs[-1], seed=2)
  assert (config.dataset.num_frames, config.dataset.stride) == (64, 2)
  assert (config.model.adapter.type, config.model.trainable_spatial_layers) == ('mlp', 1)
  assert config.feature_cache.dir == os.path.join('w', 'seed2', f'cache_{stage1}_dial1_64f')
  assert config.init_from.checkpoint_path == os.path.join('w', 'seed2', stage1)
  assert runner.cache_config(rows['recipe_k1_64f'].runs[-1], 2) == config
  assert runner.views(rows['recipe_k1_64f'].runs[-1]) == 2
  config = runner.run_config(rows['recipe_k1_64f'].runs[0], seed=2)
  assert (config.dataset.num_frames, config.dataset.stride) == (8, 16)
  config = runner.run_config(rows['recipe_b_k0_64f'].runs[-1], seed=1)
  assert config.init_from.checkpoint_path == os.path.join('w', 'seed1', base32)
  assert config.feature_cache.dir == os.path.join('w', 'seed1', f'cache_{base32}_64f')
  assert (config.dataset.num_frames, config.model.trainable_spatial_layers) == (64, 0)
  config = runner.run_config(rows['baseline_128f'].runs[0], seed=0)
  assert (config.dataset.num_frames, config.dataset.stride, config.num_training_steps,
          config.lr_configs.base_learning_rate) == (128, 1, 1200, 3e-3)


def test_a_plan_without_the_sweeps_frame_count_or_with_an_unknown_dial_is_an_error():
  with pytest.raises(ValueError, match='--frames=64,128: the sweep runs at 32 frames'):
    frames.make_plan(False, 32, frames=(128, 64))
  with pytest.raises(ValueError, match=r'--dials / --baseline_dials: \[3\] not among'):
    frames.make_plan(False, 32, dials=(0, 3))
  with pytest.raises(ValueError, match=r'--frames: \[48\] do not divide the 128-frame clip'):
    frames.make_plan(False, 32, frames=(32, 48))


class FakeRunner:
  """Validation top-1 by (route, frames) and steps, or (lr, steps) where a learning rate
  scores apart; records what was asked."""

  def __init__(self, plan, scores):
    self.frames_plan, self.scores, self.asked = plan, scores, []

  def summary(self, run, seed):
    self.asked.append((run.key, seed))
    route = 'baseline' if run.kind == 'baseline' else f'stage2_k{run.dial}'
    scores = self.scores[route, run.frames]
    top1 = scores.get((run.schedule.lr, run.schedule.steps), scores.get(run.schedule.steps))
    return None if top1 is None else fake_summary(0.5, 0.9, 1., 1.) | {
        'eval': {'top1': top1 / 100, 'top5': 1.}}


def test_steps_double_while_validation_gains_more_than_the_plateau_gain():
  runner = FakeRunner(PLAN, {
      # +5 points, then +1.0 (not more than PLATEAU_GAIN): 2400 kept.
      ('baseline', 128): {1200: 60., 2400: 65., 4800: 66.},
      # +0.5 points: the first doubling is not kept.
      ('stage2_k0', 128): {600: 70., 1200: 70.5},
      # +3, +3: both doublings kept, and no third is tried (MAX_DOUBLINGS).
      ('stage2_k1', 128): {1200: 50., 2400: 53., 4800: 56.},
      ('baseline', 64): {1200: 60.}})  # 2400 not finished: no choice yet
  kept = {r: frames.grow_steps(runner, r, 128, CHOICE)[0]
          for r in ('baseline', 'stage2_k0', 'stage2_k1')}
  assert kept == {'baseline': Schedule(3e-3, 2400, 50), 'stage2_k0': Schedule(3e-3, 600, 50),
                  'stage2_k1': Schedule(1e-3, 4800, 50)}
  assert {seed for _, seed in runner.asked} == {frames.SWEEP_SEED}
  assert [k for k, _ in runner.asked if k.startswith('baseline')] == [
      'baseline_128f_lr0.003_s1200_w50', 'baseline_128f_lr0.003_s2400_w50',
      'baseline_128f_lr0.003_s4800_w50']
  schedule, tried = frames.grow_steps(runner, 'baseline', 64, CHOICE)
  assert schedule is None and [s is None for _, s in tried] == [False, True]


def test_the_runner_up_learning_rate_is_tried_at_the_kept_steps_and_kept_if_better():
  """The sweep's best other learning rate (1e-3: 33 > 31; the None run is not counted)
  is tried at the steps the growth kept, its steps grown when it does at least as well,
  and kept only when its validation is higher."""
  def swept_run(lr, steps, top1):
    return (frames.route_run(PLAN, 'baseline', 32, Schedule(lr, steps, 50), CHOICE),
            None if top1 is None else {'eval': {'top1': top1}})
  swept = [swept_run(1e-3, 600, .30), swept_run(1e-3, 1200, .33), swept_run(3e-3, 1200, .37),
           swept_run(9e-3, 600, .31), swept_run(2.7e-2, 600, None)]
  assert frames.runner_up_lr(swept, CHOICE['baseline']) == 1e-3
  assert frames.runner_up_lr(swept[2:3], CHOICE['baseline']) is None
  first = ['baseline_128f_lr0.003_s1200_w50', 'baseline_128f_lr0.003_s2400_w50',
           'baseline_128f_lr0.001_s1200_w50']
  for other, longer, kept, extra in (
      (59., None, Schedule(3e-3, 1200, 50), []),  # worse: not grown, not kept
      (70., 70.5, Schedule(1e-3, 1200, 50), ['baseline_128f_lr0.001_s2400_w50']),
      (60., 64., Schedule(1e-3, 2400, 50), ['baseline_128f_lr0.001_s2400_w50',
                                            'baseline_128f_lr0.001_s4800_w50'])):
    runner = FakeRunner(PLAN, {('baseline', 128): {
        1200: 60., 2400: 60.5, (1e-3, 1200): other, (1e-3, 2400): longer,
        (1e-3, 4800): 64.5}})
    schedule, tried = frames.grow_steps(runner, 'baseline', 128, CHOICE, swept)
    assert schedule == kept
    assert [r.key for r, _ in tried] == first + extra
  # The check's run not finished yet: no choice.
  runner = FakeRunner(PLAN, {('baseline', 128): {1200: 60., 2400: 60.5, (1e-3, 1200): None}})
  assert frames.grow_steps(runner, 'baseline', 128, CHOICE, swept)[0] is None


def test_the_growth_table_marks_the_kept_learning_rate_and_steps():
  """Two runs at 1200 steps differ only in the learning rate: only the kept one is bold."""
  tried = [(frames.route_run(PLAN, 'baseline', 128, sched, CHOICE),
            fake_summary(0.5, 0.9, 1., 1.) | {'eval': {'top1': top1}})
           for sched, top1 in ((Schedule(3e-3, 1200, 50), .6), (Schedule(3e-3, 2400, 50), .605),
                               (Schedule(1e-3, 1200, 50), .7))]
  report = {'steps_growth': frames_report.growth_report({128: {'baseline': tried}}),
            'schedules': {'128': {'baseline': {'lr': 1e-3, 'steps': 1200, 'warmup': 50}}}}
  rows = frames_report.growth_markdown(report)[2:]
  assert rows == ['| 128 | baseline | 0.003 | 1200 | 60.00 | 1.0 |  |',
                  '| 128 | baseline | 0.003 | 2400 | 60.50 | 1.0 |  |',
                  '| 128 | baseline | 0.001 | 1200 | 70.00 | 1.0 | **yes** |']


def _entry(seed, clocks, reached=True):
  """A time_to_accuracy entry: {clock: (baseline_s, stage1_s, extraction_s, total_s)}."""
  out = {'seed': seed, 'reached': reached}
  for clock, (base, stage1, extraction, total) in clocks.items():
    out[clock] = {'baseline_s': base, 'stage1_s': stage1, 'extraction_s': extraction,
                  'total_s': total, 'ratio': None if total is None else total / base}
  return out


def test_stage1_once_counts_stage1_once_over_the_frame_counts():
  per_frames = {
      32: [_entry(0, {'wall': (100., 30., 2., 60.)}), _entry(1, {'wall': (90., 30., 2., 50.)})],
      128: [_entry(0, {'wall': (400., 30., 8., 100.)}),
            _entry(1, {'wall': (380., 30., 8., None)}, reached=False)]}
  (once,) = frames_report.stage1_once(per_frames)  # seed 1 missed 128 frames
  assert once == {'seed': 0, 'wall': {'recipe_s': 30. + 30. + 70., 'baseline_s': 500.,
                                      'ratio': 130. / 500.}}


def _rows_and_results():
  """Baseline and recipe k=0 at 32 and 64 frames on seeds 0 and 1, from hand-made
  summaries: the baseline reaches 80 (target 79.5) at 40 s / 80 s; the recipe's stage 2
  at 10 s, its stage 1 20 s, its extraction 1 s (32) and 2 s (64)."""
  plan = frames.make_plan(False, 32, frames=(32, 64), dials=(0,))
  schedules = {f: {'baseline': CHOICE['baseline'], 'stage2_k0': CHOICE['stage2_k0']}
               for f in plan.frames}
  rows = frames.make_rows(plan, CHOICE, schedules)
  results = {}
  for seed in (0, 1):
    runs, caches = {}, {}
    for row in rows:
      last = row.runs[-1]
      f = last.frames
      if last.kind == 'baseline':
        runs[last.key] = fake_summary(0.7 + seed / 10, 0.9, f * 1.25, f * 1.25, [
            (f * 0.3125, f * 0.3125, 70.), (f * 1.25, f * 1.25, 80.)])
      else:
        runs[row.runs[0].key] = fake_summary(0.3, 0.9, 20., 20.)
        runs[last.key] = fake_summary(0.6, 0.9, 30., 30., [(10., 10., 79.5 + seed)])
        caches[last.cache] = {'seconds': f / 32, 'cpu_seconds': f / 32, 'written': {}}
    results[seed] = {'runs': runs, 'caches': caches}
  return plan, rows, results


def test_the_table_per_frame_count_and_stage1_once_from_hand_made_results():
  plan, rows, results = _rows_and_results()
  by_name = {r.name: ablation_report.aggregate_row(r, results) for r in rows}
  table = frames_report.frames_table(plan, by_name, benchmark_json='')
  assert [(t['frames'], t['stride']) for t in table] == [(32, 4), (64, 2)]
  assert table[0]['baseline_test_top1'] == pytest.approx({'mean': 75.,
                                                          'std': np.std([70, 80], ddof=1)})
  r64 = table[1]['recipes']['0']
  assert [e['wall']['total_s'] for e in r64['time_to_accuracy']] == [20. + 2. + 10.] * 2
  assert [e['wall']['baseline_s'] for e in r64['time_to_accuracy']] == [80.] * 2
  assert r64['ratio']['wall'] == {'mean': pytest.approx(32 / 80), 'std': 0.}
  assert r64['test_top1']['mean'] == pytest.approx(60.)
  once = frames_report.stage1_once({t['frames']: t['recipes']['0']['time_to_accuracy']
                                    for t in table})
  assert [e['wall']['ratio'] for e in once] == [pytest.approx((20 + 11 + 12) / 120)] * 2


def test_targets_per_frame_count_from_hand_made_results():
  plan, rows, results = _rows_and_results()
  by_name = {r.name: ablation_report.aggregate_row(r, results) for r in rows}
  table = frames_report.frames_table(plan, by_name, benchmark_json='')
  found = {(t['frames'], t['target'].split(' ')[0]): t for t in
           frames_report.targets(plan, by_name, table)}
  # Test top-1: recipe 60 against the baseline's 75 at both frame counts: missed; time:
  # 32 / 80 = 0.4x at 64 frames (met), (20 + 1 + 10) / 40 = 0.775x at 32 (missed).
  assert not found[32, 'recipe_k0_32f']['met'] and not found[64, 'recipe_k0_64f']['met']
  assert '-15.00' in found[64, 'recipe_k0_64f']['measured']
  times = {f: t for (f, name), t in found.items() if name == 'recipe_k0_' + f'{f}f,'}
  assert [times[f]['met'] for f in (32, 64)] == [False, True]
  assert 'wall 0.400x ± 0.000' in times[64]['measured']


class CollapseRunner:
  """Every run finished; its last training loss by (run key, seed), 1.0 unless given;
  test top-1 0.9 for a run whose learning rate is 3e-3, else 0.4."""

  def __init__(self, plan, losses):
    self.frames_plan, self.losses, self.asked = plan, losses, []

  def summary(self, run, seed):
    self.asked.append((run.key, seed))
    return fake_summary(0.9 if run.schedule.lr == 3e-3 else 0.4, 1., 1., 1.)

  def final_train_loss(self, run, seed):
    return self.losses.get((run.key, seed), 1.)


def test_a_collapsed_run_is_rerun_on_its_seed_at_the_next_lower_learning_rate():
  """Seed 1's 32-frame baseline at 9e-3 ends at ln 4 (it predicts the class prior): on
  seed 1 it is rerun at 3e-3 (the sweep's next lower rate), the recipe whose stage 1 it
  is starts from the rerun; seed 0's 1.33 is learning and stays; a collapsed run at the
  sweep's lowest rate has nothing to fall back to and stays; a rerun that collapses
  too falls again. The report reads each seed's rows in the usual rows' places."""
  plan = frames.make_plan(False, 32, frames=(32, 64), dials=(0,), baseline_dials=(0,))
  choice = {'baseline': Schedule(9e-3, 600, 50), 'stage1': Schedule(3e-3, 1800, 50),
            'stage2_k0': Schedule(1e-3, 300, 50), 'stage2_b_k0': Schedule(3e-3, 600, 50)}
  schedules = {32: dict(choice),
               64: {'baseline': Schedule(3e-3, 600, 50), 'stage2_k0': choice['stage2_k0'],
                    'stage2_b_k0': choice['stage2_b_k0']}}
  schedules[32].pop('stage1')
  tried = {route: [(frames.route_run(plan, route, 32, Schedule(lr, 600, 50), choice), {})
                   for lr in lrs]
           for route, lrs in (('baseline', (1e-3, 3e-3, 9e-3, 2.7e-2)), ('stage1', (1e-3, 3e-3)),
                              ('stage2_k0', (1e-3, 3e-3)), ('stage2_b_k0', (1e-3, 3e-3)))}
  usual = frames.make_rows(plan, choice, schedules)
  run = {r.name: r.runs for r in usual}
  prior = float(np.log(4))
  k0_64 = run['recipe_k0_64f'][-1].key
  runner = CollapseRunner(plan, {
      (run['baseline_32f'][0].key, 0): 1.3325, (run['baseline_32f'][0].key, 1): prior,
      (k0_64, 1): prior - 0.004,  # within COLLAPSE_TOL, at the lowest swept rate
      (run['baseline_64f'][0].key, 2): prior,
      ('baseline_64f_lr0.001_s600_w50', 2): prior + 0.01})
  seeded, restarts = {}, []
  for seed in (0, 1, 2):
    seeded[seed], found = frames.seed_rows(runner, choice, schedules, tried, seed, 4)
    restarts += found
  assert [r.runs for r in seeded[0]] == [r.runs for r in usual]
  assert [(r['seed'], r['collapsed'], r['rerun']) for r in restarts] == [
      (1, 'baseline_32f_lr0.009_s600_w50', 'baseline_32f_lr0.003_s600_w50'),
      (2, 'baseline_64f_lr0.003_s600_w50', 'baseline_64f_lr0.001_s600_w50')]
  one = {r.name: r.runs for r in seeded[1]}
  assert one['baseline_32f'][0].key == 'baseline_32f_lr0.003_s600_w50'
  assert one['recipe_b_k0_64f'][0].key == 'baseline_32f_lr0.003_s600_w50'
  assert one['recipe_b_k0_64f'][1].cache == 'baseline_32f_lr0.003_s600_w50_64f'
  assert one['recipe_k0_64f'] == run['recipe_k0_64f']  # collapsed, but no lower rate
  two = {r.name: r.runs for r in seeded[2]}
  assert two['baseline_64f'][0].schedule.lr == 1e-3  # its own collapse has no lower rate
  assert two['baseline_32f'] == run['baseline_32f']
  # The report: seed 1's baseline_32f row reads the rerun (3e-3: 90) where seed 0 reads
  # the usual run (9e-3: 40), and says so.
  results = {seed: {'runs': {r.key: runner.summary(r, seed) for row in seeded[seed]
                             for r in row.runs},
                    'caches': {row.caches[0]: {'seconds': 1., 'cpu_seconds': 1.}
                               for row in seeded[seed] if row.caches}}
             for seed in (0, 1)}
  rows = {a['name']: a for a in frames_report.aggregate_rows(usual, seeded, results)}
  base = rows['baseline_32f']
  assert [base['per_seed'][s]['test_top1'] for s in (0, 1)] == [40., 90.]
  record = base['per_seed'][1]['runs']['baseline_32f_lr0.009_s600_w50']
  assert (record['key'], record['schedule']['lr']) == ('baseline_32f_lr0.003_s600_w50', 3e-3)
  assert base['per_seed'][1]['reruns'] == {
      'baseline_32f_lr0.009_s600_w50': 'baseline_32f_lr0.003_s600_w50'}
  assert base['per_seed'][0]['reruns'] == {}
  b64 = rows['recipe_b_k0_64f']
  assert b64['seeds'] == [0, 1] and b64['per_seed'][1]['reruns'] == {
      'baseline_32f_lr0.009_s600_w50': 'baseline_32f_lr0.003_s600_w50',
      'baseline_32f_lr0.009_s600_w50_64f__stage2_mlp_lr0.003_s600_w50':
          'baseline_32f_lr0.003_s600_w50_64f__stage2_mlp_lr0.003_s600_w50'}


def test_the_recipe_from_the_32_frame_baseline_prices_that_run_at_32_frames(tmp_path):
  """Stage 1 = the baseline_32f row's run: the recipe at 64 frames counts its 2 steps at
  the 32-frame baseline step (0.32 s), not the 64-frame one (0.64 s)."""
  bench = _benchmark(tmp_path / 'bench.json')
  plan = frames.make_plan(False, 32, frames=(32, 64), dials=(), baseline_dials=(0,))
  assert plan.recipes == (('b0', 'stage2_b_k0'),)
  choice = dict(CHOICE, stage2_b_k0=CHOICE['stage2_k0'])
  schedules = {f: {'baseline': CHOICE['baseline'], 'stage2_b_k0': CHOICE['stage2_k0']}
               for f in plan.frames}
  rows = frames.make_rows(plan, choice, schedules)
  assert [r.name for r in rows] == ['baseline_32f', 'recipe_b_k0_32f', 'baseline_64f',
                                    'recipe_b_k0_64f']
  runs, caches = {}, {}
  for row in rows:
    last = row.runs[-1]
    if last.kind == 'baseline':
      runs[last.key] = fake_summary(0.8, 0.9, 10., 10., [(5., 5., 70.), (10., 10., 80.)])
      runs[last.key]['config']['dataset']['num_frames'] = last.frames
    else:
      runs[last.key] = fake_summary(0.8, 0.9, 3., 3., [(1., 1., 80.)])
      caches[last.cache] = {'seconds': 1., 'cpu_seconds': 1., 'written': {'train': 10}}
  results = {0: {'runs': runs, 'caches': caches}}
  by_name = {r.name: ablation_report.aggregate_row(r, results) for r in rows}
  table = frames_report.frames_table(plan, by_name, bench)
  (entry,) = table[1]['recipes']['b0']['time_to_accuracy']
  assert entry['priced']['stage1_s'] == pytest.approx(2 * 0.32)
  assert entry['wall']['stage1_s'] == 10.  # the baseline_32f run's own seconds
  assert entry['priced']['extraction_s'] == pytest.approx(10 * 0.0128)
  report = {'recipes': {'b0': frames_report.recipe_label('b0', plan)}, 'dials': [],
            'table': table}
  assert frames_report.reward_lines(report)[-1].startswith(
      '* recipe stage 1 = baseline 32f, k=0: test top-1 80.00 at 32 frames')


def test_memory_per_frame_count_from_benchmark_files(tmp_path):
  def case(variant, mode, frames, total, **extra):
    return dict(variant=variant, mode=mode, frames=frames, batch=8, resolution=224,
                memory={'total': total}, **extra)
  path = tmp_path / 'bench.json'
  path.write_text(json.dumps({'cases': [
      case('B/16x2', 'baseline', 32, 2 * 2**30), case('B/16x2', 'baseline', 128, 8 * 2**30),
      case('B/16x2', 'baseline', 16, 2**30),  # not a frame count of the study
      case('B/16x2', 'stage2+cached', 128, 2**29, adapter='mlp',
           trainable_spatial_layers=1)]}))
  table = frames_report.memory_table([str(path)], (32, 64, 128))
  assert [(r['mode'], r['total_gib']) for r in table] == [
      ('baseline', {'32': 2., '128': 8.}), ('stage2+cached (mlp, k=1)', {'128': 0.5})]
  lines = frames_report.memory_lines({'memory': table, 'frames': [32, 64, 128]})
  assert lines[2] == f'| `{path}` | B/16x2 | 224 | 8 | baseline | 2.000 | — | 8.000 |'


def _benchmark(path, frames=(32, 64)):
  """A benchmark OUT.json: the baseline's step 0.01 s per frame (stage 1's at 8), stage 2
  from the cache (attention 0.004, mlp 0.001, mlp at k=1 0.003 s per frame)."""
  def case(mode, f, step, adapter=None, dial=0, extract=None):
    timing = {'step_s': step} | ({'extract_s_per_clip': extract} if extract else {})
    return dict(variant='Ti/8x2', mode=mode, frames=f, batch=32, resolution=32,
                adapter=adapter, trainable_spatial_layers=dial, timing=timing,
                memory={'total': f * 2**20})
  cases = [case('baseline', 8, 0.08)]
  for f in frames:
    cases += [case('baseline', f, 0.01 * f),
              case('stage2+cached', f, 0.004 * f, 'attention', extract=0.0002 * f),
              case('stage2+cached', f, 0.001 * f, 'mlp', extract=0.0001 * f),
              case('stage2+cached', f, 0.003 * f, 'mlp', 1, extract=0.0003 * f)]
  path.write_text(json.dumps({'meta': {'command': 'bench'}, 'cases': cases}))
  return str(path)


def test_the_compute_only_clock_and_the_plans_prices_come_from_the_benchmark(tmp_path):
  bench = _benchmark(tmp_path / 'bench.json')
  plan, rows, results = _rows_and_results()
  for seed in results:  # the caches' clips: 100 training views, 20 eval and test
    for cache in results[seed]['caches'].values():
      cache['written'] = {'train': 100, 'eval': 20}
  by_name = {r.name: ablation_report.aggregate_row(r, results) for r in rows}
  table = frames_report.frames_table(plan, by_name, bench)
  # At 64 frames: the baseline reaches the target at step 1 (0.64 s a step); the recipe's
  # stage 1 2 steps at 0.08 s, 120 clip-views at 0.0128 s (the attention case's price),
  # stage 2's target at step 0 (no step).
  (entry, _) = table[1]['recipes']['0']['time_to_accuracy']
  assert entry['priced'] == pytest.approx({
      'baseline_s': 0.64, 'stage1_s': 0.16, 'extraction_s': 120 * 0.0128,
      'total_s': 0.16 + 120 * 0.0128, 'ratio': (0.16 + 120 * 0.0128) / 0.64,
      # The whole routes (the front picture): the baseline's 2 steps; stage 1, the
      # extraction and all of stage 2's 2 steps at the attention case's 0.256 s.
      'baseline_whole_s': 2 * 0.64, 'whole_s': 0.16 + 120 * 0.0128 + 2 * 0.256})
  plan = frames.make_plan(False, 32, frames=(32, 64), dials=(0, 1))
  per_step = frames_cost.benchmark_step_seconds(bench, plan,
                                                frames_cost.parse_step_seconds(''))
  assert per_step['baseline'] == pytest.approx({8: 0.08, 32: 0.32, 64: 0.64, 128: 1.708})
  assert per_step['stage2_k0'] == pytest.approx({8: 0.003, 32: 0.032, 64: 0.064,
                                                 128: 0.104})
  assert per_step['stage2_k1'][64] == pytest.approx(0.192)
  assert frames_report.memory_table([bench], (64,))[0]['total_gib'] == {'64': 64 / 1024}


def test_plan_only_prices_every_run_and_trains_nothing(tmp_path, capsys):
  """Two seeds, the dial k=0 only, against a hand count: seed 0's rows are sweep and
  growth runs; seed 1 trains its rows again."""
  workdir = f'{tmp_path}/runs'
  est = frames_study.main([f'--workdir={workdir}', f'--out={tmp_path}/f', '--seeds=0,1',
                           '--dials=0', '--baseline_dials=', '--plan_only'])
  b, k0 = frames_cost.STEP_SECONDS['baseline'], frames_cost.STEP_SECONDS['stage2_k0']
  sweep = 3600 * b[32] + 2 * 1800 * b[8] + 3600 * k0[32]
  growth = 3600 * (b[64] + b[128] + k0[64] + k0[128])  # 1200 and 2400 steps each
  lr_check = 1200 * (b[64] + b[128] + k0[64] + k0[128])  # the other lr, 1e-3, at 1200
  seed1 = 1200 * (b[32] + b[64] + b[128]) + 1800 * b[8] + 1200 * (k0[32] + k0[64] + k0[128])
  assert len(est['runs']) == 10 + 8 + 4 + 7
  assert est['total_s'] == pytest.approx(sweep + growth + lr_check + seed1)
  assert est['caches'] == 2 * 3  # per seed and frame count
  out = capsys.readouterr().out
  assert f'Total: 29 runs, {sum(r["steps"] for r in est["runs"])} steps, ' in out
  assert not os.path.exists(workdir)
  est = frames_study.main([f'--workdir={workdir}', f'--out={tmp_path}/f', '--seeds=0',
                           '--dials=0', '--baseline_dials=', '--plan_only',
                           '--step_seconds=baseline=0.722'])
  step = {r['key']: r['step_s'] for r in est['runs']}
  assert step['baseline_128f_lr0.003_s1200_w50'] == pytest.approx(2 * b[128])
  with pytest.raises(ValueError, match=r"--step_seconds: 'stage3=1' is not ROUTE=SECONDS"):
    frames_study.main([f'--workdir={workdir}', f'--out={tmp_path}/f', '--plan_only',
                       '--step_seconds=stage3=1'])


# ----------------------------------------------------------------------------------------
# One end-to-end study: the real CLI, trainer and feature cache on the smallest data.
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  """The baseline and the recipe (k=0) at 4 frames of 24, seed 0: three runs and a cache."""
  from vivit_adapter.studies import image_pretrain  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp('frames')
  workdir, out = str(tmp / 'runs'), str(tmp / 'docs' / 'frames')
  config = ablation_plan.experiment_config('stage1', STUDY, quick=True)
  model = image_pretrain.image_model(config.model, num_classes=3)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)))['params']
  image_npz = str(tmp / 'vit_image.npz')
  image_pretrain.save_npz(params, image_npz)
  args = [f'--workdir={workdir}', f'--out={out}', '--seeds=0', '--frames=4', '--dials=0',
          '--quick', f'--image_checkpoint={image_npz}']
  return frames_study.main(args), workdir, out, args


def test_quick_study_runs_the_baseline_stage1_the_cache_and_stage2(quick_run):
  report, workdir, _, _ = quick_run
  assert report['complete'] and [r['name'] for r in report['rows']] == [
      'baseline_4f', 'recipe_k0_4f', 'recipe_b_k0_4f']
  base, recipe, from_base = report['rows']
  stage1_key, stage2_key = recipe['runs']
  cache = f'cache_{stage1_key}_4f'
  # The b recipe's stage 1 is the baseline row's own run: no other stage 1 is trained.
  assert from_base['runs'][0] == base['runs'][0]
  assert sorted(os.listdir(os.path.join(workdir, 'seed0'))) == sorted(
      [base['runs'][0], stage1_key, stage2_key, cache, from_base['runs'][1],
       f'cache_{base["runs"][0]}_4f'])
  s1, s2 = (recipe['per_seed'][0]['runs'][k] for k in recipe['runs'])
  assert (s1['num_frames'], s2['num_frames'], s2['adapter']) == (2, 4, 'mlp')
  with open(os.path.join(workdir, 'seed0', stage2_key, 'config.json')) as f:
    assert json.load(f)['dataset']['stride'] == 6  # 4 frames span the 24-frame clip
  with open(os.path.join(workdir, 'seed0', cache, 'extraction.json')) as f:
    extraction = json.load(f)
  assert extraction['views'] == 6
  seed0 = recipe['per_seed'][0]
  assert seed0['wall_time_s'] == pytest.approx(
      s1['train_time_s'] + extraction['seconds'] + s2['train_time_s'])
  (row,) = report['table']
  assert (row['frames'], row['stride'], row['baseline']) == (4, 6, 'baseline_4f')
  assert len(row['recipes']['0']['time_to_accuracy']) == 1
  assert set(row['recipes']) == {'0', 'b0'}


def test_quick_outputs_and_report_only(quick_run, capsys):
  report, workdir, out, args = quick_run
  with open(out + '.json') as f:
    assert json.load(f) == json.loads(json.dumps(report))
  assert os.path.getsize(out + '.png') > 1000
  with open(out + '.md') as f:
    md = f.read()
  assert '# Where the saving grows: 4 frames (--quick smoke run)' in md
  assert '| 4 (6) | baseline_4f |' in md and '| | recipe_k0_4f |' in md
  assert 'Status: complete' in md
  capsys.readouterr()
  again = frames_study.main(args + ['--report_only'])
  assert 'cache_' not in capsys.readouterr().out  # nothing extracted or trained again
  as_json = lambda value: json.loads(json.dumps(value))
  # The same numbers (a cache record read back lacks only the in-memory 'reused' flag).
  assert as_json([r['stats'] for r in again['rows']]) == as_json(
      [r['stats'] for r in report['rows']])
  # A clean clone (no runs): the docs again from <out>.json, the notes kept.
  with open(out + '.md') as f:
    md = f.read()
  notes = '<!-- notes -->'
  with open(out + '.md', 'w') as f:
    f.write(md.replace(notes, notes + '\nkeep me'))
  os.remove(out + '.png')
  clean = [a for a in args if not a.startswith('--workdir=')] + [
      f'--workdir={workdir}_none', '--report_only']
  assert as_json(frames_study.main(clean)) == as_json(again)
  with open(out + '.md') as f:
    assert os.path.exists(out + '.png') and 'keep me' in f.read()
  with pytest.raises(ValueError, match='--report_only: no finished runs in .*_none and no '
                                       '.*nothing.json to rewrite the docs from'):
    frames_study.main(clean[1:] + [f'--out={workdir}/nothing'])
  assert as_json(again['table']) == as_json(report['table'])

