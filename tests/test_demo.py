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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(run, label, frames, trainable, frozen, time_s, eval_top1, test_top1):
  return {'run': run, 'label': label, 'frames': frames, 'trainable_params': trainable,
          'frozen_params': frozen, 'step_memory_mib': 2.5, 'train_time_s': time_s,
          'steps': 10, 'eval_top1': eval_top1, 'eval_top5': 1.0, 'test_top1': test_top1,
          'test_top5': 1.0, 'reused': False}


ROWS = [_row('stage1', 's1', 8, 1000, 0, 30.0, 0.5, 0.4),
        demo.extraction_row({'views': 4, 'seconds': 6.0, 'reused': False},
                            _row('stage2', 's2', 32, 300, 700, 50.0, 0.8, 0.75)),
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


def test_compare_sums_both_stages_and_the_extraction_and_uses_test_top1():
  c = demo.compare({r['run']: r for r in ROWS})
  assert c['metric'] == 'test_top1'
  assert c['two_stage_train_time_s'] == 80.0 and c['time_ratio'] == pytest.approx(0.8)
  assert c['extraction_time_s'] == 6.0
  assert c['reaches_baseline_top1'] and c['less_time']  # a tie reaches the baseline
  assert ('stage 1 + extraction + stage 2: 80 s (0.80x the baseline\'s 100 s), test top-1 '
          '75.0% vs the baseline\'s 75.0%') in demo.comparison_line(c)
  worse = [dict(r, test_top1=None) for r in ROWS[:3]] + [dict(ROWS[3], test_top1=None,
                                                              eval_top1=0.9)]
  c = demo.compare({r['run']: r for r in worse})
  assert c['metric'] == 'eval_top1' and not c['reaches_baseline_top1']
  assert 'does NOT reach the baseline\'s eval top-1' in demo.comparison_line(c)


def test_markdown_table_has_one_row_per_run():
  lines = demo.markdown_table(ROWS).splitlines()
  assert len(lines) == 2 + len(ROWS)
  assert len({line.count('|') for line in lines}) == 1  # every row has every column
  assert lines[3] == '| feature extraction (4 views) | 32 | 0 | 700 | - | 6 | - | - | - | - | - |'
  assert lines[4] == '| s2 | 32 | 300 | 700 | 2.5 | 44 | 10 | 80.0 | 100.0 | 75.0 | 100.0 |'


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


def test_stage2_starts_from_the_demos_stage1():
  config = demo.run_config(demo.RUNS[1], 'runs/x', 'runs/x/data', demo.FULL)
  assert config.init_from.checkpoint_path == 'runs/x/stage1'
  assert config.dataset.base_dir == 'runs/x/data' and not config.dataset.flip
  assert config.feature_cache.dir == 'runs/x/cache'  # stage 2 trains from the cache


def _demo(workdir):
  # One CPU device, as `make demo` has on a CPU machine (conftest gives the test
  # processes 4 for the sharding tests); it also compiles faster.
  proc = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.demo', f'--workdir={workdir}', '--quick'],
      cwd=REPO, env=tu.env(1), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_quick_demo_end_to_end_then_reused(tmp_path):
  workdir = tmp_path / 'demo'
  out = _demo(workdir)
  assert '[demo] Generating the synthetic dataset' in out
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
  summary = json.loads((workdir / 'baseline' / 'summary.json').read_text())
  assert runs['baseline']['test_top1'] == summary['test']['top1']
  assert runs['baseline']['eval_top1'] == summary['eval']['top1']
  c = results['comparison']
  assert '[demo] cache: done' in out and runs['extraction']['train_time_s'] > 0
  assert (workdir / 'cache' / 'manifest.json').exists()
  assert c['two_stage_train_time_s'] == pytest.approx(
      runs['stage1']['train_time_s'] + runs['extraction']['train_time_s']
      + runs['stage2']['train_time_s'])
  stage2 = json.loads((workdir / 'stage2' / 'summary.json').read_text())
  assert stage2['feature_cache'] == str(workdir / 'cache')
  table = (workdir / 'results.md').read_text()
  assert table in out and demo.comparison_line(c) in table
  # header, stage 1, extraction, stage 2, baseline
  assert sum(line.startswith('| ') for line in table.splitlines()) == 5

  again = _demo(workdir)
  assert '[demo] Reusing the dataset' in again
  for name in ('stage1', 'stage2', 'baseline'):
    assert f'[demo] {name}: reusing the finished run' in again
  assert '[demo] cache: reused' in again
  reused = json.loads((workdir / 'results.json').read_text())['runs']
  assert all(r['reused'] for r in reused.values())
  assert {n: dict(r, reused=False) for n, r in reused.items()} == runs
