"""The ablation's numbers: per-row statistics over seeds, the targets, time to accuracy.

`build_report` gathers them, with how and where they were measured, into the one
JSON-serialisable dict that docs/ablation.{json,md,png} show.
"""

import dataclasses
import json
import os
import platform
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation.plan import Plan, Row, Run

METRICS = ('top1', 'top5')
# The report's tables: Row.table -> its title.
TABLES = (('main', 'Main rows (the paper\'s I / III / V against the baseline)'),
          ('init_frames', 'Stage-1 frame count (init-frames ablation)'),
          ('adapter', 'Stage-2 adapter type'),
          ('stage2_steps', 'Stage-2 length (V as run, and with the baseline\'s steps)'))


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
  """Mean and sample standard deviation (ddof=1); std is None for a single value."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def run_record(run: Run, summary: Dict) -> Dict:
  """What the table and the tests need from one run's summary.json."""
  cfg = summary['config']
  return {
      'kind': run.kind, 'num_frames': cfg['dataset']['num_frames'],
      'adapter': cfg['model']['adapter']['type'],
      'freeze_spatial': cfg['model']['freeze_spatial'], 'steps': summary['step'],
      'init_from': cfg['init_from']['checkpoint_path'], 'start': summary['start'],
      'params': summary['params'], 'frozen_modules': summary['frozen_modules'],
      'train_time_s': summary['train_time_s'],
      'eval_curve': summary.get('eval_curve', []),
      'test': {m: 100 * summary['test'][m] for m in METRICS if m in summary['test']},
      'eval': {m: 100 * summary['eval'][m] for m in METRICS if m in summary['eval']}}


def aggregate_row(row: Row, runs: Dict[str, Run], results: Dict[int, Dict[str, Dict]]) -> Dict:
  """Per-seed values and mean/std of test top-1/top-5 (percent) and total wall time."""
  seeds = sorted(s for s, done in results.items() if all(k in done for k in row.runs))
  per_seed = {}
  for s in seeds:
    records = {k: run_record(runs[k], results[s][k]) for k in row.runs}
    last = records[row.runs[-1]]  # the run whose model the row evaluates
    per_seed[s] = {'test_top1': last['test']['top1'], 'test_top5': last['test']['top5'],
                   'eval_top1': last['eval']['top1'], 'eval_top5': last['eval']['top5'],
                   'wall_time_s': sum(r['train_time_s'] for r in records.values()),
                   'runs': records}
  stats = {}
  for metric in ('test_top1', 'test_top5', 'eval_top1', 'eval_top5', 'wall_time_s'):
    if seeds:
      stats[metric] = dict(zip(('mean', 'std'),
                               mean_std([per_seed[s][metric] for s in seeds])))
  return {'name': row.name, 'table': row.table, 'description': row.description,
          'runs': list(row.runs), 'seeds': seeds, 'per_seed': per_seed, 'stats': stats}


def check_targets(by_name: Dict[str, Dict]) -> List[Dict]:
  """The issue's targets, each with the measured numbers and whether it holds."""
  def stat(row, metric):
    s = by_name.get(row, {}).get('stats', {}).get(metric)
    return None if s is None else s['mean']
  base, v = stat('baseline', 'test_top1'), stat('V', 'test_top1')
  base_t, v_t = stat('baseline', 'wall_time_s'), stat('V', 'wall_time_s')
  i, iii = stat('I', 'test_top1'), stat('III', 'test_top1')
  targets = []
  if base is not None and v is not None:
    targets.append({'target': 'V top-1 >= baseline top-1 - 0.5 points',
                    'measured': f'V {v:.2f} vs baseline {base:.2f} ({v - base:+.2f})',
                    'met': v >= base - 0.5})
  if base_t is not None and v_t is not None:
    targets.append({'target': "V total wall time <= 0.45x the baseline's",
                    'measured': f'{v_t / base_t:.3f}x ({v_t:.0f}s vs {base_t:.0f}s)',
                    'met': v_t <= 0.45 * base_t})
  if None not in (i, iii, v):
    targets.append({'target': 'top-1: I < III < V',
                    'measured': f'I {i:.2f}, III {iii:.2f}, V {v:.2f}',
                    'met': i < iii < v})
  return targets


def _first_time_at(curve: Sequence[Dict], target: float) -> Optional[float]:
  return next((p['train_time_s'] for p in curve if p['top1'] >= target), None)


# Two-stage rows compared with the baseline in time to accuracy (when they ran).
TIME_ROWS = ('V', 'stage2_long')


def time_to_accuracy(by_name: Dict[str, Dict], row: str = 'V') -> List[Dict]:
  """Per seed: training seconds until the baseline and `row` first reach one eval top-1.

  The target is the lower of the two rows' best eval top-1 (%), so that both reach it.
  A two-stage row's time is its whole stage 1 plus stage 2 until the target (stage 1 is
  judged on its few-frame clips, so only stage 2's evaluations count).
  """
  base, v = by_name.get('baseline'), by_name.get(row)
  if not base or not v:
    return []
  out = []
  for seed in sorted(set(base['seeds']) & set(v['seeds'])):
    b_runs, v_runs = base['per_seed'][seed]['runs'], v['per_seed'][seed]['runs']
    b_curve = b_runs[base['runs'][-1]]['eval_curve']
    s1, s2 = (v_runs[k] for k in v['runs'])
    if not b_curve or not s2['eval_curve']:
      continue
    target = min(max(p['top1'] for p in b_curve), max(p['top1'] for p in s2['eval_curve']))
    b_t = _first_time_at(b_curve, target)
    v_t = s1['train_time_s'] + _first_time_at(s2['eval_curve'], target)
    out.append({'seed': seed, 'target_eval_top1': target, 'baseline_s': b_t, 'v_s': v_t,
                'v_stage1_s': s1['train_time_s'], 'ratio': v_t / b_t,
                'evaluations': [len(b_curve), len(s2['eval_curve'])]})
  return out


def machine_info() -> Dict:
  load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'load_average_1_5_15': [round(x, 2) for x in load]}


def build_report(rows: List[Row], plan: Plan, seeds: Sequence[int], results, *,
                 image_report: Dict, data_dir: str, command: str, started: Dict) -> Dict:
  """Everything docs/ablation.{json,md,png} show, as one JSON-serialisable dict."""
  runs = ablation_plan.make_runs(plan)
  aggregated = [aggregate_row(r, runs, results) for r in rows]
  by_name = {a['name']: a for a in aggregated}
  missing = [f'{a["name"]} seed {s}' for a in aggregated for s in seeds
             if s not in a['seeds']]
  meta_path = os.path.join(data_dir, 'metadata.json')
  with open(meta_path) as f:
    meta = json.load(f)
  return {
      'command': command, 'complete': not missing, 'missing': missing,
      'seeds': list(seeds), 'quick': plan.quick,
      'plan': dataclasses.asdict(plan), 'rows': aggregated,
      'targets': check_targets(by_name),
      'time_to_accuracy': {row: time_to_accuracy(by_name, row) for row in TIME_ROWS
                           if row in by_name},
      'image_checkpoint': image_report,
      'data': {k: meta.get(k) for k in ('num_classes', 'splits', 'resolution',
                                        'num_frames', 'scene', 'generator_version')},
      'data_dir': data_dir, 'machine_at_start': started, 'machine_at_end': machine_info()}
