"""The demo (vivit_adapter.studies.demo, run by vivit_adapter.demo): data reuse rules, the
results table, and `--quick` end to end (twice)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from data_pipelines import synthetic
from tests import trainer_utils as tu
from vivit_adapter.studies import demo
from vivit_adapter.studies import demo_results
from vivit_adapter.studies import runs as study_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _curve(points):
  """An eval curve as studies.runs.eval_curve returns it: (step, top1 %, wall s, CPU s)."""
  return [{'step': s, 'top1': t, 'train_time_s': w, 'train_cpu_s': c}
          for s, t, w, c in points]


def _summary(curve, steps, eval_top1, test_top1=None):
  return {'eval_curve': _curve(curve), 'step': steps, 'eval': {'top1': eval_top1},
          'test': {} if test_top1 is None else {'top1': test_top1},
          'train_time_s': curve[-1][2], 'train_cpu_s': curve[-1][3]}


# Stage 1 40 s (CPU 70), extraction 6 s (CPU 9), stage 2 20 s (CPU 30): stage 2 first
# reaches its final 0.8 at its 15 s evaluation, so the route at 40 + 6 + 15 = 61 s.
STAGE1 = _summary([(50, 30.0, 20.0, 35.0), (100, 50.0, 40.0, 70.0)], 100, 0.5)
EXTRACTION = {'seconds': 6.0, 'cpu_seconds': 9.0, 'views': 1, 'reused': False}
STAGE2 = _summary([(50, 60.0, 5.0, 8.0), (100, 80.0, 15.0, 22.0), (150, 75.0, 18.0, 27.0),
                   (200, 80.0, 20.0, 30.0)], 200, 0.8, 0.75)
REACHED = _summary([(25, 40.0, 30.0, 50.0), (50, 70.0, 60.0, 100.0), (75, 80.0, 100.0, 170.0),
                    (100, 85.0, 130.0, 220.0)], 100, 0.85, 0.8)
MISSED = _summary([(25, 40.0, 30.0, 50.0), (50, 70.0, 60.0, 100.0),
                   (75, 72.0, 100.0, 170.0)], 75, 0.72, 0.7)
ROUTES = {'two_stage': 'two', 'baseline': 'base'}


def _row(run, label, frames, trainable, frozen, time_s, eval_top1, test_top1):
  return {'run': run, 'label': label, 'frames': frames, 'trainable_params': trainable,
          'frozen_params': frozen, 'step_memory_mib': 2.5, 'train_time_s': time_s,
          'steps': 10, 'eval_top1': eval_top1, 'eval_top5': 1.0, 'test_top1': test_top1,
          'test_top5': 1.0, 'reused': False}


ROWS = [_row('stage1', 's1', 8, 1000, 0, 30.0, 0.5, 0.4),
        demo_results.extraction_row(EXTRACTION, _row('stage2', 's2', 32, 300, 700, 50.0, 0.8,
                                                     0.75)),
        _row('stage2', 's2', 32, 300, 700, 44.0, 0.8, 0.75),
        _row('baseline', 'base', 32, 1000, 0, 100.0, 0.7, 0.75)]


def test_requested_metadata_matches_what_generate_writes(tmp_path):
  data = dict(resolution=16, num_frames=4, train_per_class=1, val_per_class=0,
              test_per_class=1, num_shards=1, classes=['grow', 'shrink'],
              scene=synthetic.SceneConfig(noise_std=0.0))
  synthetic.generate(str(tmp_path), **data, progress=False)
  assert demo.metadata_mismatch(str(tmp_path), demo.requested_metadata(data)) is None
  other = demo.requested_metadata(dict(data, train_per_class=2, seed=1))
  assert demo.metadata_mismatch(str(tmp_path), other) == (
      f'{tmp_path}/metadata.json differs in clips_per_class, seed')
  assert demo.metadata_mismatch(str(tmp_path / 'none'), other) == (
      f'{tmp_path}/none/metadata.json does not exist')


def test_a_new_dataset_drops_the_runs_and_the_image_checkpoint_made_from_the_old(tmp_path):
  for name in ('stage1', 'stage2', 'baseline', 'cache', 'data'):
    (tmp_path / name).mkdir()
  for name in (demo.IMAGE_CHECKPOINT, demo.IMAGE_REPORT, 'results.md'):
    (tmp_path / name).write_text('x')
  demo._drop_stale_runs(str(tmp_path), demo.RUNS)  # pylint: disable=protected-access
  assert sorted(p.name for p in tmp_path.iterdir()) == ['data', 'results.md']


def test_compare_times_both_routes_to_the_two_stage_routes_final_eval_top1():
  c = demo_results.compare(STAGE1, EXTRACTION, STAGE2, REACHED)
  assert c['target_eval_top1'] == 80.0
  assert c['wall'] == {
      'stage1_s': 40.0, 'extraction_s': 6.0, 'stage2_s': 20.0, 'two_stage_total_s': 66.0,
      'baseline_total_s': 130.0, 'two_stage_to_target_s': 61.0, 'baseline_to_target_s': 100.0,
      'ratio': pytest.approx(0.61),
      'baseline_at_two_stage_total': REACHED['eval_curve'][1]}  # 60 s <= 66 s < 100 s
  cpu = c['cpu']
  assert (cpu['two_stage_to_target_s'], cpu['baseline_to_target_s']) == (70 + 9 + 22, 170.0)
  assert cpu['ratio'] == pytest.approx(101 / 170)
  assert cpu['baseline_at_two_stage_total'] == REACHED['eval_curve'][1]  # 100 <= 109
  assert (c['two_stage_test_top1'], c['baseline_test_top1']) == (75.0, 80.0)
  table = demo_results.comparison_table(c, ROUTES).splitlines()
  assert table[2].endswith('| 61 | 0.61x | 80.0 |')
  assert table[3] == '| baseline | base | 130 | 85.0 | 80.0 | 100 | 1x | 70.0 |'
  lines = demo_results.comparison_lines(c)
  assert lines[0] == ('Time to 80.0% eval top-1 (the two-stage route\'s final): the '
                      'two-stage route in 61 s; the baseline in 100 s: 0.61x the '
                      'baseline\'s time.')
  assert lines[1] == ('The baseline\'s eval top-1 at the two-stage route\'s total training '
                      'time (66 s): 70.0% (its evaluation at step 50, 60 s).')
  assert lines[2] == ('On the CPU clock (all threads), to 80.0%: two-stage 101 s, baseline '
                      '170 s (0.59x); whole runs: two-stage 109 s, baseline 220 s.')


def test_a_baseline_that_never_reaches_the_target_has_no_ratio():
  c = demo_results.compare(STAGE1, EXTRACTION, STAGE2, MISSED)
  assert c['wall']['baseline_to_target_s'] is None and c['wall']['ratio'] is None
  assert c['cpu']['ratio'] is None and c['baseline_best_eval_top1'] == 72.0
  table = demo_results.comparison_table(c, ROUTES).splitlines()
  assert table[0] == ('| route | what trains | training time (s) | eval top-1 (%) | test top-1 '
                      '(%) | time to 80.0% eval top-1 (s) | x the baseline\'s time to it | '
                      'eval top-1 at 66 s (%) |')
  assert table[2] == ('| stage 1 + extraction + stage 2 | two | 40 + 6 + 20 = 66 | 80.0 | 75.0 '
                      '| 61 | - (baseline: not reached) | 80.0 |')
  assert table[3] == ('| baseline | base | 100 | 72.0 | 70.0 | not reached within the cap | - '
                      '| 70.0 |')
  lines = demo_results.comparison_lines(c)
  assert lines[0].endswith('the baseline did not reach it within its cap of 75 steps (100 s; '
                           'its best eval top-1 72.0%), so there is no ratio (the study\'s '
                           'baseline needs 1200-1550 steps to its level).')
  assert 'baseline not reached within the cap; whole runs: two-stage 109 s' in lines[2]
  # Before the baseline's first evaluation there is nothing to read.
  assert demo_results.accuracy_at(MISSED['eval_curve'], 29.0, 'train_time_s') is None


def test_markdown_table_has_one_row_per_run():
  lines = demo_results.markdown_table(ROWS).splitlines()
  assert len(lines) == 2 + len(ROWS)
  assert len({line.count('|') for line in lines}) == 1  # every row has every column
  assert lines[3] == ('| feature extraction (1 view(s) per clip) | 32 | 0 | 700 | - | 6 | - '
                      '| - | - | - | - |')
  assert lines[4] == '| s2 | 32 | 300 | 700 | 2.5 | 44 | 10 | 80.0 | 100.0 | 75.0 | 100.0 |'


def test_the_demos_schedules_are_the_ablations_choices():
  """docs/ablation.json's sweep chose them; the demo runs them (stage 1 at the chosen
  steps, not the 4x of the best row: see studies/demo.py)."""
  with open(os.path.join(REPO, 'docs', 'ablation.json')) as f:
    study = json.load(f)
  chosen = {route: study['sweep'][route]['chosen'] for route in ('stage1', 'stage2', 'baseline')}
  for run in demo.RUNS:
    config = demo.run_config(run, 'w', 'w/data', demo.FULL)
    want = chosen[run.name]
    assert config.lr_configs.base_learning_rate == want['lr'], run.name
    assert config.lr_configs.warmup_steps == want['warmup'], run.name
    assert config.lr_configs.schedule == study['model']['optimizer'].split(', ')[-1]
    if run.name != 'baseline':  # the baseline stops at the demo's cap
      assert config.num_training_steps == want['steps'], run.name
  assert demo.run_config(demo.RUNS[2], 'w', 'w/data', demo.FULL).num_training_steps == (
      demo.BASELINE_CAP_STEPS)
  stage2 = demo.run_config(demo.RUNS[1], 'w', 'w/data', demo.FULL)
  adapters = {r['name']: r['stats']['test_top1']['mean'] for r in study['rows']
              if r['table'] == 'adapter'}
  assert f'adapter_{stage2.model.adapter.type}' == max(adapters, key=adapters.get)
  assert demo.FULL.views == study['plan']['views']


def test_the_study_verdict_quotes_docs_ablation_json():
  with open(os.path.join(REPO, 'docs', 'ablation.json')) as f:
    study = json.load(f)['rows']
  rows = {r['name']: r['stats']['test_top1'] for r in study}
  for name, mean, std in (demo_results.STUDY['baseline'], demo_results.STUDY['two_stage']):
    assert (mean, std) == (round(rows[name]['mean'], 2), round(rows[name]['std'], 2)), name
  # The best two-stage recipe: stage 1, then stage 2 (not the ceiling row, whose stage 2
  # reads the whole baseline's encoder).
  recipes = [r['name'] for r in study if r['runs'][0].startswith('stage1_')]
  best = max(recipes, key=lambda n: rows[n]['mean'])
  assert best == demo_results.STUDY['two_stage'][0]
  # The baseline's steps to its level (best eval top-1 less the study's 0.5 margin).
  base = next(r for r in study if r['name'] == 'baseline')
  steps = []
  for per_seed in base['per_seed'].values():
    curve = per_seed['runs'][base['runs'][-1]]['eval_curve']
    level = max(p['top1'] for p in curve) - 0.5
    steps.append(next(p['step'] for p in curve if p['top1'] >= level))
  assert demo_results.STUDY['baseline_steps_to_level'] == f'{min(steps)}-{max(steps)}'
  verdict = demo_results.study_verdict()
  assert verdict.startswith('Verdict of the full study (docs/ablation.md, ')
  assert ('reaches 92.64 ± 0.48 test top-1 against the tuned baseline\'s 94.44 ± 0.24, 1.8 '
          'points short') in verdict


def test_a_finished_run_of_another_config_is_an_error(tmp_path):
  """The rule of studies.runs (tests/test_studies_runs.py), on the demo's own configs."""
  workdir, data_dir = str(tmp_path), str(tmp_path / 'data')
  config = demo.run_config(demo.RUNS[0], workdir, data_dir, demo.FULL)
  summary = {'config': json.loads(config.to_json()), 'step': 1, 'train_time_s': 1.0}
  (tmp_path / 'stage1').mkdir()
  (tmp_path / 'stage1' / 'summary.json').write_text(json.dumps(summary))
  reused = demo.run_one(demo.RUNS[0], workdir, data_dir, demo.FULL)
  assert reused == dict(summary, eval_curve=[], reused=True)
  other = dataclasses.replace(demo.FULL, overrides=('batch_size=7',))
  with pytest.raises(ValueError, match=r'stage1/summary.json is a finished run of another '
                     r'config \(keys that differ: batch_size\)'):
    demo.run_one(demo.RUNS[0], workdir, data_dir, other)


def test_stage2_starts_from_the_demos_stage1_and_the_others_from_the_image_vit():
  config = demo.run_config(demo.RUNS[1], 'runs/x', 'runs/x/data', demo.FULL)
  assert config.init_from.checkpoint_path == 'runs/x/stage1'
  assert config.dataset.base_dir == 'runs/x/data' and not config.dataset.flip
  assert config.feature_cache.dir == 'runs/x/cache'  # stage 2 trains from the cache
  assert config.model.adapter.type == 'mlp'
  for run in (demo.RUNS[0], demo.RUNS[2]):
    config = demo.run_config(run, 'runs/x', 'runs/x/data', demo.FULL)
    assert config.init_from.checkpoint_path == 'runs/x/vit_image.npz', run.name
    assert config.init_from.checkpoint_format == 'vit_npz', run.name


def _demo(workdir):
  # One CPU device, as `make demo` has on a CPU machine (conftest gives the test
  # processes 4 for the sharding tests); it also compiles faster.
  proc = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.demo', f'--workdir={workdir}', '--quick'],
      cwd=REPO, env=tu.env(1), capture_output=True, text=True, timeout=420)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _first_at(curve, target, clock):
  """Independent of demo_results: the first evaluation at or above `target`."""
  for point in curve:
    if point['top1'] >= target:
      return point[clock]
  return None


def test_quick_demo_end_to_end_then_reused(tmp_path):
  workdir = tmp_path / 'demo'
  out = _demo(workdir)
  assert '[demo] Generating the synthetic dataset' in out
  assert '[demo] Pretraining the image ViT' in out and (workdir / 'vit_image.npz').exists()
  for name in ('stage1', 'stage2', 'baseline'):
    assert f'[demo] {name}: starting' in out
    assert (workdir / name / 'summary.json').exists()
  results = json.loads((workdir / 'results.json').read_text())
  runs = results['runs']
  assert [runs[n]['frames'] for n in ('stage1', 'stage2', 'baseline')] == [8, 32, 32]
  assert runs['stage1']['frozen_params'] == runs['baseline']['frozen_params'] == 0
  # Stage 2 freezes what stage 1 trained end to end and adds only the adapter.
  assert 0 < runs['stage2']['frozen_params'] < runs['stage1']['trainable_params']
  assert runs['stage2']['step_memory_mib'] < runs['baseline']['step_memory_mib']
  assert '[demo] cache: done' in out and runs['extraction']['train_time_s'] > 0
  assert (workdir / 'cache' / 'manifest.json').exists()
  summaries = {n: study_runs.finished_summary(str(workdir / n))
               for n in ('stage1', 'stage2', 'baseline')}
  assert summaries['stage2']['feature_cache'] == str(workdir / 'cache')
  assert runs['baseline']['test_top1'] == summaries['baseline']['test']['top1']

  # The ratio, from the recorded curves (an evaluation every step: 3 each) and the
  # extraction's record, on the wall clock.
  extraction = json.loads((workdir / 'cache' / 'extraction.json').read_text())
  curves = {n: s['eval_curve'] for n, s in summaries.items()}
  assert [len(c) for c in curves.values()] == [3, 3, 3]
  target = 100 * summaries['stage2']['eval']['top1']
  before = summaries['stage1']['train_time_s'] + extraction['seconds']
  two_t = before + _first_at(curves['stage2'], target, 'train_time_s')
  base_t = _first_at(curves['baseline'], target, 'train_time_s')
  c = results['comparison']
  assert c['target_eval_top1'] == target
  assert c['wall']['two_stage_to_target_s'] == pytest.approx(two_t)
  assert c['wall']['two_stage_total_s'] == pytest.approx(
      before + summaries['stage2']['train_time_s'])
  if base_t is None:
    assert c['wall']['ratio'] is None and 'not reached within the cap' in out
  else:
    assert c['wall']['ratio'] == pytest.approx(two_t / base_t)
    assert f'{c["wall"]["ratio"]:.2f}x the baseline\'s time' in out

  table = (workdir / 'results.md').read_text()
  assert table in out
  assert demo_results.study_verdict() in out.splitlines()
  # The comparison table (header + 2 routes) and the runs' (header + 4 rows).
  assert sum(line.startswith('| ') for line in table.splitlines()) == 3 + 5
  png = (workdir / demo_results.CURVES_PNG).read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000

  again = _demo(workdir)
  assert '[demo] Reusing the dataset' in again
  assert '[demo] Reusing the image checkpoint' in again
  for name in ('stage1', 'stage2', 'baseline'):
    assert f'[demo] {name}: reusing the finished run' in again
  assert '[demo] cache: reused' in again
  reused = json.loads((workdir / 'results.json').read_text())
  assert all(r['reused'] for r in reused['runs'].values())
  assert {n: dict(r, reused=False) for n, r in reused['runs'].items()} == runs
  assert reused['comparison'] == c
