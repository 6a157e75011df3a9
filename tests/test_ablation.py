"""Tests for the ablation (vivit_adapter.studies.ablation and its CLI, vivit_adapter.ablation):
rows, configs, arithmetic, outputs, a --quick run."""

import json
import os
import statistics

import pytest

from vivit_adapter import ablation
from vivit_adapter.studies.ablation import markdown as ablation_markdown
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation import run as ablation_run

SPATIAL = {'embedding', 'cls_SpatialTransformer', 'SpatialTransformer'}
# What an image checkpoint gives a video model (the rest keeps its random init).
FROM_IMAGE = ('restored: SpatialTransformer, cls_SpatialTransformer, embedding\n'
              '  fresh init: TemporalTransformer, cls_TemporalTransformer, output_projection')
FULL_PLAN = ablation_plan.Plan(stage2_frames=32, stage1_frames=8, init_frames=(2, 4, 8),
                               steps={'baseline': 430, 'stage1': 430, 'stage2': 215,
                                      'frozen_image': 215})
SMALL_PLAN = ablation_plan.Plan(8, 4, (2, 4), {k: 2 for k in FULL_PLAN.steps})


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  """--quick runs shared by the end-to-end tests: row I on seeds 0 and 1, row V on seed 0.

  Four runs in all (each one compiles three steps), which covers every run kind.
  """
  tmp = tmp_path_factory.mktemp('ablation')
  workdir, out = str(tmp / 'runs'), str(tmp / 'docs' / 'ablation')
  rows_i = ablation.main([f'--workdir={workdir}', f'--out={out}_i', '--seeds=0,1',
                          '--rows=I', '--quick'])
  report = ablation.main([f'--workdir={workdir}', f'--out={out}', '--seeds=0',
                          '--rows=I,V', '--quick'])
  return report, workdir, out, rows_i


def test_rows_use_the_intended_runs():
  rows = {r.name: r for r in ablation_plan.make_rows(FULL_PLAN)}
  assert list(rows) == ['baseline', 'I', 'III', 'V', 'stage1_2f', 'stage1_4f',
                        'stage1_8f', 'adapter_attention', 'adapter_mlp', 'adapter_none',
                        'stage2_short', 'stage2_long']
  assert rows['V'].runs == ('stage1_8f', 'stage2_from8f_attention')
  assert rows['V'].runs == rows['stage1_8f'].runs == rows['adapter_attention'].runs
  assert rows['adapter_none'].runs == ('stage1_8f', 'stage2_from8f_none')
  runs = ablation_plan.make_runs(FULL_PLAN)
  assert len(runs) == 12  # 3 single-stage runs, 3 stage-1 runs, 6 stage-2 runs
  assert rows['stage2_short'].runs == rows['V'].runs
  assert rows['stage2_long'].runs == ('stage1_8f', 'stage2_from8f_attention_long')
  long_config = ablation_plan.run_config(
      runs['stage2_from8f_attention_long'], FULL_PLAN, seed=1, data_dir='d',
      image_checkpoint='i.npz', run_dirs={'stage1_8f': 's1'})
  assert long_config.num_training_steps == FULL_PLAN.steps['baseline'] == 430
  assert (long_config.model.freeze_spatial, long_config.model.adapter.type,
          long_config.init_from.checkpoint_path) == (True, 'attention', 's1')
  assert long_config.log_eval_steps == FULL_PLAN.eval_every
  assert runs['stage2_from2f_attention'] == ablation_plan.Run(
      'stage2_from2f_attention', 'stage2', 32, 'attention', 'stage1_2f')
  assert {runs[k].frames for r in rows.values() for k in r.runs[-1:]} == {32}
  with pytest.raises(ValueError, match=r"unknown row\(s\) \['II'\]; choose from"):
    ablation_plan.select_rows(list(rows.values()), ['I', 'II'])


def test_mean_std_matches_statistics():
  values = [61.25, 58.5, 64.0]
  mean, std = ablation_report.mean_std(values)
  assert mean == pytest.approx(statistics.mean(values))
  assert std == pytest.approx(statistics.stdev(values))
  assert ablation_report.mean_std([3.0]) == (3.0, None)


def fake_summary(top1, top5, seconds, kind='stage2'):
  return {'config': {'dataset': {'num_frames': 8}, 'model': {
      'adapter': {'type': 'attention'}, 'freeze_spatial': kind == 'stage2'},
      'init_from': {'checkpoint_path': 'x'}}, 'step': 2, 'start': 'fake',
          'params': {'trainable': 1, 'frozen': 2}, 'frozen_modules': [],
          'train_time_s': seconds, 'test': {'top1': top1, 'top5': top5},
          'eval': {'top1': top1 / 2, 'top5': top5 / 2}}


def test_aggregate_row_sums_stages_and_scores_the_last_run():
  row = {r.name: r for r in ablation_plan.make_rows(SMALL_PLAN)}['V']
  results = {s: {'stage1_4f': fake_summary(0.1, 0.2, 10.0 + s, 'stage1'),
                 'stage2_from4f_attention': fake_summary(0.5 + s / 10, 0.9, 4.0)}
             for s in (0, 1, 2)}
  del results[2]['stage2_from4f_attention']  # an unfinished seed is left out
  agg = ablation_report.aggregate_row(row, ablation_plan.make_runs(SMALL_PLAN), results)
  assert agg['seeds'] == [0, 1]
  assert agg['stats']['test_top1']['mean'] == pytest.approx(55.0)
  assert agg['stats']['test_top1']['std'] == pytest.approx(statistics.stdev([50.0, 60.0]))
  assert agg['stats']['eval_top5']['mean'] == pytest.approx(45.0)
  assert [agg['per_seed'][s]['wall_time_s'] for s in (0, 1)] == [14.0, 15.0]


def _curve(*points):
  return [{'step': i, 'train_time_s': t, 'top1': a} for i, (t, a) in enumerate(points)]


def test_time_to_accuracy_targets_the_accuracy_both_rows_reach():
  rows = {r.name: r for r in ablation_plan.make_rows(SMALL_PLAN)}
  runs = ablation_plan.make_runs(SMALL_PLAN)
  results = {}
  for seed, best_v in ((0, 70.0), (1, 90.0)):
    base = fake_summary(0.6, 0.9, 100.0, 'baseline')
    base['eval_curve'] = _curve((20, 30.0), (50, 60.0), (80, 80.0), (100, 75.0))
    stage1 = fake_summary(0.4, 0.8, 10.0, 'stage1')
    stage1['eval_curve'] = _curve((10, 95.0))  # few-frame eval: never counts
    stage2 = fake_summary(0.7, 0.9, 30.0)
    stage2['eval_curve'] = _curve((6, 50.0), (12, best_v), (30, best_v - 1))
    results[seed] = {'baseline': base, 'stage1_4f': stage1,
                     'stage2_from4f_attention': stage2}
  by_name = {n: ablation_report.aggregate_row(rows[n], runs, results)
             for n in ('baseline', 'V')}
  out = ablation_report.time_to_accuracy(by_name)
  # Seed 0: V's best (70) is below the baseline's (80): both first reach 70 at 80 s and
  # at 10 + 12 s. Seed 1: the baseline's best (80) is the target; V reaches it at 12 s.
  assert [(e['seed'], e['target_eval_top1'], e['baseline_s'], e['v_s']) for e in out] == [
      (0, 70.0, 80.0, 22.0), (1, 80.0, 80.0, 22.0)]
  assert out[0]['ratio'] == pytest.approx(22 / 80)
  table = ablation_markdown.time_to_accuracy_markdown(out)
  assert table[2] == '| 0 | 70.00 | 80.0 | 10.0 + 12.0 = 22.0 | 0.275 | 4, 3 |'
  assert table[-1].startswith('| mean ± std | | | | 0.275 ± 0.000')


def test_targets():
  def row(top1, wall):
    return {'stats': {'test_top1': {'mean': top1}, 'wall_time_s': {'mean': wall}}}
  targets = ablation_report.check_targets({'baseline': row(60, 100), 'I': row(20, 30),
                                    'III': row(30, 30), 'V': row(59.6, 45)})
  assert [t['met'] for t in targets] == [True, True, True]
  targets = ablation_report.check_targets({'baseline': row(60, 100), 'I': row(40, 30),
                                    'III': row(30, 30), 'V': row(59.4, 46)})
  assert [t['met'] for t in targets] == [False, False, False]
  assert targets[1]['measured'] == '0.460x (46s vs 100s)'


def test_quick_rows_ran_the_intended_configuration(quick_run):
  report, workdir, _, rows_i = quick_run
  rows = {r['name']: r for r in report['rows']}
  assert set(rows) == {'I', 'V'} and report['complete']
  image_npz = os.path.join(workdir, ablation_run.IMAGE_CHECKPOINT)
  for seed in (0, 1):
    frozen = rows_i['rows'][0]['per_seed'][seed]['runs']['frozen_image_none']
    assert (frozen['adapter'], frozen['freeze_spatial'], frozen['num_frames']) == (
        'none', True, 8)
    assert set(frozen['frozen_modules']) == SPATIAL and frozen['params']['frozen'] > 0
    assert frozen['start'].startswith(f'Initialised from vit_npz checkpoint {image_npz}.')
    assert FROM_IMAGE in frozen['start']
  s1 = rows['V']['per_seed'][0]['runs']['stage1_4f']
  assert (s1['freeze_spatial'], s1['num_frames'], s1['params']['frozen']) == (False, 4, 0)
  assert s1['start'].startswith(f'Initialised from vit_npz checkpoint {image_npz}.')
  assert FROM_IMAGE in s1['start']
  s2 = rows['V']['per_seed'][0]['runs']['stage2_from4f_attention']
  assert (s2['adapter'], s2['num_frames'], s2['steps']) == ('attention', 8, 2)
  assert set(s2['frozen_modules']) == SPATIAL
  assert s2['params']['frozen'] == frozen['params']['frozen']
  assert s2['params']['trainable'] > frozen['params']['trainable']  # + the adapter
  stage1_dir = os.path.join(workdir, 'seed0', 'stage1_4f')
  assert s2['start'].startswith(f'Initialised from workdir checkpoint {stage1_dir}')
  assert ('restored: SpatialTransformer, TemporalTransformer, cls_SpatialTransformer, '
          'cls_TemporalTransformer, embedding, output_projection\n  fresh init: Adapter'
          ) in s2['start']


def test_quick_statistics_match_the_summaries_on_disk(quick_run):
  report, workdir, _, rows_i = quick_run
  summaries = {}
  for seed in (0, 1):
    with open(os.path.join(workdir, f'seed{seed}', 'frozen_image_none', 'summary.json')) as f:
      summaries[seed] = json.load(f)
  stats = rows_i['rows'][0]['stats']
  for metric in ('top1', 'top5'):
    values = [100 * summaries[s]['test'][metric] for s in (0, 1)]
    assert stats[f'test_{metric}']['mean'] == pytest.approx(statistics.mean(values))
    assert stats[f'test_{metric}']['std'] == pytest.approx(statistics.stdev(values))
  walls = [summaries[s]['train_time_s'] for s in (0, 1)]
  assert stats['wall_time_s']['mean'] == pytest.approx(statistics.mean(walls))
  v = {r['name']: r for r in report['rows']}['V']['per_seed'][0]
  stage_times = []
  for key in ('stage1_4f', 'stage2_from4f_attention'):
    with open(os.path.join(workdir, 'seed0', key, 'summary.json')) as f:
      stage_times.append(json.load(f)['train_time_s'])
  assert v['wall_time_s'] == pytest.approx(sum(stage_times))  # V = stage 1 + stage 2


def test_quick_outputs_and_resume(quick_run, capsys):
  report, workdir, out, _ = quick_run
  with open(out + '.json') as f:
    assert json.load(f) == json.loads(json.dumps(report))
  assert os.path.getsize(out + '.png') > 1000
  with open(out + '.md') as f:
    md = f.read()
  assert '| row | description | test top-1 (%) | test top-5 (%) | wall time (s) | seeds |' in md
  v = {r['name']: r for r in report['rows']}['V']['stats']
  assert (f'| V | {report["rows"][1]["description"]} | '
          f'{v["test_top1"]["mean"]:.2f} ± — |') in md  # one seed: no std
  assert '--quick' in md and 'Status: complete' in md
  # Each run's eval curve comes from its history, the final evaluation timed exactly.
  stage2 = {r['name']: r for r in report['rows']}['V']['per_seed'][0]['runs'][
      'stage2_from4f_attention']
  assert stage2['eval_curve'][-1]['step'] == stage2['steps']
  assert stage2['eval_curve'][-1]['train_time_s'] == stage2['train_time_s']
  assert '(no seed with both the baseline and V finished)' in md
  # Hand-written notes survive; a rerun trains nothing (every summary.json is reused)
  # and a missing seed turns the report into a partial one.
  notes = ablation_markdown.NOTES_BEGIN
  with open(out + '.md', 'w') as f:
    f.write(md.replace(notes, notes + '\nkeep me'))
  again = ablation.main([f'--workdir={workdir}', f'--out={out}', '--seeds=0,1,5',
                         '--rows=I,V', '--quick', '--report_only'])
  assert 'Pretraining' not in capsys.readouterr().out
  assert again['missing'] == ['I seed 5', 'V seed 1', 'V seed 5']
  assert not again['complete']
  with open(out + '.md') as f:
    md = f.read()
  assert 'keep me' in md and '**PARTIAL**' in md and '--report_only' not in md


def test_ensure_run_reads_without_touching_and_trains_by_the_shared_rule(
    tmp_path, monkeypatch, capsys):
  """report_only (train=False) deletes nothing and reports a run of another config with a
  warning; training applies studies.runs' rule (tests/test_studies_runs.py)."""
  from vivit_adapter.train_lib import trainer  # pylint: disable=g-import-not-at-top
  run = ablation_plan.make_runs(FULL_PLAN)['baseline']
  config = ablation_plan.run_config(run, FULL_PLAN, seed=0, data_dir='d',
                                    image_checkpoint='i.npz', run_dirs={})
  run_dir = tmp_path / 'seed0' / 'baseline'
  (run_dir / 'checkpoints' / '43').mkdir(parents=True)  # an unfinished run
  trained = []

  def fake_train(config, workdir):
    trained.append(os.path.exists(workdir))
    os.makedirs(workdir)
    summary = dict(fake_summary(0.5, 0.9, 1.0), config=json.loads(config.to_json()))
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:  # as the trainer does
      json.dump(summary, f)
    return summary
  monkeypatch.setattr(trainer, 'train_and_evaluate', fake_train)
  assert ablation_run.ensure_run(run, config, str(run_dir), train=False) is None
  assert os.path.exists(run_dir / 'checkpoints' / '43')  # report_only touches nothing
  summary = ablation_run.ensure_run(run, config, str(run_dir))
  assert trained == [False] and summary['train_time_s'] == 1.0  # restarted from scratch
  assert ablation_run.ensure_run(run, config, str(run_dir)) == summary  # reused
  assert trained == [False]
  config.num_training_steps += 1
  assert ablation_run.ensure_run(run, config, str(run_dir), train=False) == summary
  assert 'WARNING: ' in capsys.readouterr().out
  with pytest.raises(ValueError, match=r'keys that differ: num_training_steps\)'):
    ablation_run.ensure_run(run, config, str(run_dir))
