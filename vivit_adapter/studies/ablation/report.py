"""The ablation's numbers: the sweep, per-row statistics over seeds, time to accuracy, targets.

`build_report` gathers them, with how and where they were measured, into the one
JSON-serialisable dict that docs/ablation.{json,md,png} show. A row's time is its whole
route: every run's training time plus the extraction of every feature cache it reads
(wall and CPU seconds; compilation and evaluation excluded throughout).
"""

import dataclasses
import json
import os
import platform
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vivit_adapter.benchmarks import step_report
from vivit_adapter.studies import runs as study_runs
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation.plan import Plan, Row, Run, Schedule

METRICS = ('top1', 'top5')
# The report's tables: Row.table -> its title.
TABLES = (('main', 'Main rows (the paper\'s I / III / V against the baseline)'),
          ('init_frames', 'Stage-1 frame count (init-frames ablation)'),
          ('adapter', 'Stage-2 adapter type'),
          ('limits', 'What limits V: the frozen spatial features'),
          ('dial', 'The spatial dial: the top k spatial layers trained in stage 2'),
          ('adapter_study', 'The adapter: width, learning rate, what it reads'))
STATS = ('test_top1', 'test_top5', 'eval_top1', 'wall_time_s', 'cpu_time_s')
# Recipe variants checked against the same accuracy and time targets as V, beside it.
TARGET_VARIANTS = ('V_long_stage1', 'V_long_stage1_mlp', 'V_stage1_4f_long_mlp',
                   *(f'V_stage1_x{f}_mlp' for f in ablation_plan.MLP_STAGE1_FACTORS))
# Timed against the baseline: the two-stage rows, and I/III (the image checkpoint's
# frozen features from a cache, the checkpoint shared with the baseline and not counted).
# The dial's rows (plan.DIAL_LAYERS): with the recipe's stage 1 (a target variant too)
# and without stage 1.
DIAL_ROWS = tuple(f'V_stage1_x{ablation_plan.DIAL_STAGE1_FACTOR}_mlp_dial{k}'
                  for k in ablation_plan.DIAL_LAYERS)
# The dial without stage 1 (I_mlp at k = 0, 1, 2: the image checkpoint's encoder, which
# the baseline starts from too) is a recipe as well, held to the same targets.
NO_STAGE1_ROWS = ('I_mlp', *(f'I_mlp_dial{k}' for k in ablation_plan.DIAL_LAYERS))
# Stage 1 as the baseline stopped early (plan.EARLY_BASELINE_FRACTIONS).
EARLY_ROWS = tuple(f'early_{n}_mlp' for n in ablation_plan.EARLY_BASELINE_FRACTIONS)
TARGET_VARIANTS += DIAL_ROWS + NO_STAGE1_ROWS + EARLY_ROWS
TIME_ROWS = ('V', 'I', 'III', 'adapter_mlp', 'adapter_none', 'stage1_4f', 'stage1_2f',
             *TARGET_VARIANTS)
TIME_TARGET = 0.45  # the whole recipe's share of the baseline's time to accuracy
ACCURACY_MARGIN = 0.5  # V may trail the baseline by this many top-1 points


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
  """Mean and sample standard deviation (ddof=1); std is None for a single value."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _stat(values: Sequence[float]) -> Dict:
  return dict(zip(('mean', 'std'), mean_std(values)))


def run_record(run: Run, summary: Dict) -> Dict:
  """What the tables and the tests need from one run's summary.json."""
  cfg = summary['config']
  return {
      'kind': run.kind, 'num_frames': cfg['dataset']['num_frames'],
      'adapter': cfg['model']['adapter']['type'],
      'adapter_width': cfg['model']['adapter']['hidden_size'],
      'trainable_spatial_layers': cfg['model'].get('trainable_spatial_layers', 0),
      'freeze_spatial': cfg['model']['freeze_spatial'], 'steps': summary['step'],
      'schedule': dataclasses.asdict(run.schedule),
      'feature_cache': cfg['feature_cache']['dir'],
      'init_from': cfg['init_from']['checkpoint_path'], 'start': summary['start'],
      'params': summary['params'], 'frozen_modules': summary['frozen_modules'],
      'train_time_s': summary['train_time_s'],
      'train_cpu_s': summary.get('train_cpu_s'),
      'eval_curve': summary.get('eval_curve', []),
      'test': {m: 100 * summary['test'][m] for m in METRICS if m in summary['test']},
      'test_cached': {m: 100 * v for m, v in summary.get('test_cached', {}).items()
                      if m in METRICS},
      # The final model on the enlarged test split (studies/ablation/retest), when tested.
      'test_large': {m: (100 * v if m in METRICS else v)
                     for m, v in summary.get('test_large', {}).items()
                     if m in METRICS or m == 'count'},
      'eval': {m: 100 * summary['eval'][m] for m in METRICS if m in summary['eval']}}


def aggregate_row(row: Row, results: Dict[int, Dict[str, Dict]]) -> Dict:
  """Per-seed values and mean/std of test top-1/top-5 (%) and whole-route time.

  A seed counts when every run and cache of the row finished for it.
  """
  per_seed = {}
  for seed, done in sorted(results.items()):
    if not (all(r.key in done['runs'] for r in row.runs) and
            all(c in done['caches'] for c in row.caches)):
      continue
    records = {r.key: run_record(r, done['runs'][r.key]) for r in row.runs}
    caches = {c: done['caches'][c] for c in row.caches}
    last = records[row.runs[-1].key]  # the run whose model the row evaluates
    extraction = (sum(c['seconds'] for c in caches.values()),
                  sum(c['cpu_seconds'] for c in caches.values()))
    per_seed[seed] = {
        'test_top1': last['test']['top1'], 'test_top5': last['test']['top5'],
        'eval_top1': last['eval']['top1'],
        'extraction_s': extraction[0], 'extraction_cpu_s': extraction[1],
        'wall_time_s': sum(r['train_time_s'] for r in records.values()) + extraction[0],
        'cpu_time_s': sum(r['train_cpu_s'] for r in records.values()) + extraction[1],
        'runs': records, 'caches': caches}
    if last['test_large']:
      per_seed[seed].update(test_large_top1=last['test_large']['top1'],
                            test_large_count=last['test_large']['count'])
  stats = {m: _stat([p[m] for p in per_seed.values()]) for m in STATS if per_seed}
  if per_seed and all('test_large_top1' in p for p in per_seed.values()):
    stats['test_large_top1'] = _stat([p['test_large_top1'] for p in per_seed.values()])
  return {'name': row.name, 'table': row.table, 'description': row.description,
          'runs': [r.key for r in row.runs], 'seeds': sorted(per_seed),
          'per_seed': per_seed, 'stats': stats}


# ----------------------------------------------------------------------------------------
# The sweep.
# ----------------------------------------------------------------------------------------

def sweep_report(tried: Dict[str, List[Tuple[Run, Optional[Dict]]]],
                 choice: Dict[str, Schedule], sweep_caches: Dict[str, Dict],
                 grids: Dict[str, Tuple[Schedule, ...]]) -> Dict:
  """Every configuration tried, per route, with the selection metric and its cost.

  A configuration outside the route's grid is an extension past an edge; 'at_edge'
  lists the swept axes on which the choice is still the highest or lowest value tried.
  The cost of a route's sweep is its runs' training time; stage 2's also counts the
  one extraction of the chosen stage 1's cache that all its runs read.
  """
  out = {}
  for route, runs in tried.items():
    configs = []
    for run, summary in runs:
      entry = {'key': run.key, **dataclasses.asdict(run.schedule), 'finished': bool(summary),
               'extension': run.schedule not in grids[route],
               'chosen': choice.get(route) == run.schedule}
      if summary:
        entry.update(eval_top1=100 * summary['eval']['top1'],
                     train_time_s=summary['train_time_s'],
                     train_cpu_s=summary.get('train_cpu_s'))
        # Test values are reported, never read by the choice (the baseline's curve in
        # the front picture, plots.plot_front).
        if 'top1' in summary.get('test', {}):
          entry['test_top1'] = 100 * summary['test']['top1']
        if 'top1' in summary.get('test_large', {}):
          entry['test_large_top1'] = 100 * summary['test_large']['top1']
      configs.append(entry)
    done = [c for c in configs if c['finished']]
    cache = sweep_caches.get(route) or {}
    edge = (ablation_plan.edges(grids[route], [r.schedule for r, _ in runs], choice[route])
            if route in choice else [])
    out[route] = {
        'configs': configs,
        'chosen': dataclasses.asdict(choice[route]) if route in choice else None,
        'at_edge': [f'{axis} ({side}est tried)' for axis, side in edge],
        'cost': {'runs': len(configs),
                 'train_time_s': sum(c['train_time_s'] for c in done),
                 'train_cpu_s': sum(c['train_cpu_s'] or 0.0 for c in done),
                 'extraction_s': cache.get('seconds', 0.0),
                 'extraction_cpu_s': cache.get('cpu_seconds', 0.0)}}
  return out


# ----------------------------------------------------------------------------------------
# Time to the same accuracy (docs/design.md §2c).
# ----------------------------------------------------------------------------------------

def step_prices(benchmark: Optional[Dict], stage1_frames: int) -> Optional[Dict]:
  """The compute-only clock: seconds per step of each route and per extracted clip-view,
  measured side by side in one benchmark run, so that no other job's load moves it.

  None without a benchmark that timed the baseline, stage 1 and stage 2 from the cache.
  Stage 1 at other frame counts is priced in proportion to its frames (its spatial
  encoder dominates), as `cost` prices it; a stage 2 at its adapter's cached step where
  the benchmark measured it (`--adapters`), else at the attention adapter's, an upper
  bound for the cheaper mlp and none adapters.
  """
  rows = (benchmark or {}).get('rows', {})
  need = [rows.get(n, {}).get('step_s') for n in ('baseline', 'stage 1', 'stage 2 from cache')]
  per_clip = (benchmark or {}).get('extract_s_per_clip')
  if None in need or per_clip is None:
    return None
  stage2 = {a: rows.get(f'stage 2 from cache ({a})', {}).get('step_s') or need[2]
            for a in ablation_plan.ADAPTERS}
  dial = {r['trainable_spatial_layers']: {'step': r['step_s'],
                                          'extract_per_clip': r.get('extract_s_per_clip')}
          for r in rows.values() if r.get('trainable_spatial_layers')}
  return {'baseline': need[0], 'stage1': need[1], 'stage1_frames': stage1_frames,
          'stage2': stage2, 'extract_per_clip': per_clip, 'dial': dial}


def _priced(prices: Dict, b_curve, curve, before, caches, target, adapter, dial: int,
            steps: Tuple[int, int]) -> Dict:
  """time_to_accuracy's clocks, in compute-only seconds (`step_prices`); a stage 2 at
  the spatial dial (k > 0) at its k's cached step and extraction. `steps`: the
  baseline's and stage 2's whole runs, priced as 'baseline_whole_s' and 'whole_s' (the
  front picture: test top-1 against the whole route's cost)."""
  stage2_price, per_clip = prices['stage2'][adapter], prices['extract_per_clip']
  if dial:
    stage2_price, per_clip = (prices['dial'][dial]['step'],
                              prices['dial'][dial]['extract_per_clip'] or per_clip)
  # A stage 1 that is the baseline stopped early (EARLY_ROWS) at the baseline's step;
  # one at another frame count (the frames study's) at that count's, in 'baseline_at'.
  def stage1_price(r):
    if r.get('kind') == 'baseline':
      return prices.get('baseline_at', {}).get(r['num_frames'], prices['baseline'])
    return prices['stage1'] * r['num_frames'] / prices['stage1_frames']
  stage1 = sum(r['steps'] * stage1_price(r) for r in before)
  clips = sum(sum(c['written'].values()) for c in caches.values())
  extraction = clips * per_clip
  base_step = study_runs.first_at(b_curve, target, 'step')
  stage2_step = study_runs.first_at(curve, target, 'step')
  base_t = None if base_step is None else base_step * prices['baseline']
  two_t = (None if stage2_step is None
           else stage1 + extraction + stage2_step * stage2_price)
  return {'baseline_s': base_t, 'stage1_s': stage1, 'extraction_s': extraction,
          'total_s': two_t, 'ratio': None if two_t is None else two_t / base_t,
          'baseline_whole_s': steps[0] * prices['baseline'],
          'whole_s': stage1 + extraction + steps[1] * stage2_price}


def time_to_accuracy(by_name: Dict[str, Dict], row: str = 'V',
                     prices: Optional[Dict] = None) -> List[Dict]:
  """Per seed: seconds until the baseline and `row` first reach the baseline's accuracy.

  The target is the accuracy target's level: the baseline's best eval top-1 (%) of that
  seed less ACCURACY_MARGIN. It is the baseline's, never the two-stage row's own best,
  so that a route far below the baseline cannot meet the time target at its own lower
  accuracy. A two-stage row's time is its whole stage 1 and whole extraction, then
  stage 2 until the target (stage 1 is judged on its few-frame clips, so only stage 2's
  evaluations count); a stage 2 that never reaches it is 'not reached' (total and ratio
  None). Wall and CPU seconds alike, and with `prices` (`step_prices`) compute-only
  seconds too.
  """
  base, two = by_name.get('baseline'), by_name.get(row)
  if not base or not two:
    return []
  out = []
  for seed in sorted(set(base['seeds']) & set(two['seeds'])):
    b_curve = base['per_seed'][seed]['runs'][base['runs'][-1]]['eval_curve']
    p = two['per_seed'][seed]
    before = [p['runs'][k] for k in two['runs'][:-1]]  # stage 1
    curve = p['runs'][two['runs'][-1]]['eval_curve']
    if not b_curve or not curve:
      continue
    target = max(q['top1'] for q in b_curve) - ACCURACY_MARGIN
    entry = {'seed': seed, 'target_eval_top1': target,
             'reached': study_runs.first_at(curve, target, 'train_time_s') is not None,
             'evaluations': [len(b_curve), len(curve)]}
    for clock, run_clock, extraction in (('wall', 'train_time_s', 'extraction_s'),
                                         ('cpu', 'train_cpu_s', 'extraction_cpu_s')):
      stage1 = sum(r[run_clock] for r in before)
      base_t = study_runs.first_at(b_curve, target, run_clock)
      stage2 = study_runs.first_at(curve, target, run_clock)
      two_t = None if stage2 is None else stage1 + p[extraction] + stage2
      entry[clock] = {'baseline_s': base_t, 'stage1_s': stage1,
                      'extraction_s': p[extraction], 'total_s': two_t,
                      'ratio': None if two_t is None else two_t / base_t}
    last = p['runs'][two['runs'][-1]]
    dial = last.get('trainable_spatial_layers', 0)
    if prices and (not dial or dial in prices.get('dial', {})):  # a dial the bench priced
      base_last = base['per_seed'][seed]['runs'][base['runs'][-1]]
      entry['priced'] = _priced(prices, b_curve, curve, before, p['caches'], target,
                                last['adapter'], dial, (base_last['steps'], last['steps']))
    out.append(entry)
  return out


def ratio_stats(entries: Sequence[Dict]) -> Dict[str, Dict]:
  """Mean/std of the ratios over the seeds that reached the target."""
  reached = [e for e in entries if e['reached']]
  return {c: _stat([e[c]['ratio'] for e in reached]) for c in ('wall', 'cpu', 'priced')
          if reached and all(c in e for e in reached)}


def check_targets(by_name: Dict[str, Dict], timed: Sequence[Dict],
                  row: str = 'V') -> List[Dict]:
  """The issue's targets for `row` (V: the recipe), each with the measured numbers and
  whether it holds; I < III < V only for V.

  The time target is missed when any seed's two-stage route does not reach the
  baseline's accuracy target at all.
  """
  def top1(name, metric='test_top1'):
    s = by_name.get(name, {}).get('stats', {}).get(metric)
    return None if s is None else s['mean']
  # The enlarged test split decides when both rows were tested on it on every seed.
  enlarged = None not in (top1('baseline', 'test_large_top1'), top1(row, 'test_large_top1'))
  metric = 'test_large_top1' if enlarged else 'test_top1'
  base, v = top1('baseline', metric), top1(row, metric)
  i, iii, v_study = top1('I'), top1('III'), top1(row)
  targets = []
  if base is not None and v is not None:
    split = ''
    if enlarged:
      count = by_name[row]['per_seed'][by_name[row]['seeds'][0]]['test_large_count']
      split = f' on the enlarged test split ({count:.0f} clips)'
    targets.append({'target': f'{row} test top-1 >= baseline - {ACCURACY_MARGIN} (mean '
                              'over seeds)',
                    'measured': f'{row} {v:.2f} vs baseline {base:.2f} ({v - base:+.2f})'
                                f'{split}',
                    'met': v >= base - ACCURACY_MARGIN})
  if timed:
    r = ratio_stats(timed)
    missed = [e['seed'] for e in timed if not e['reached']]
    priced = f', compute-only {_ratio(r["priced"])}' if 'priced' in r else ''
    measured = [f'wall {_ratio(r["wall"])}, CPU {_ratio(r["cpu"])}{priced} '
                f'({len(timed) - len(missed)} seeds)'] if r else []
    if missed:
      measured.append(f'not reached on seed(s) {", ".join(map(str, missed))}')
    # The clock that decides: compute-only (the benchmark's step times, measured side by
    # side in one run) when there is one, since no other job's load moves it; wall
    # otherwise. Every clock is shown. Read from the entries, not from the reached
    # seeds' stats, so that the label is right when no seed reaches the target.
    clock = 'priced' if any('priced' in e for e in timed) else 'wall'
    whole = 'whole recipe' if row == 'V' else f'{row}, whole recipe'
    parts = ('extraction + stage 2; no stage 1' if row in NO_STAGE1_ROWS else
             'stage 1 + extraction + stage 2')
    targets.append({'target': f'{whole} ({parts}) <= '
                              f'{TIME_TARGET}x the baseline\'s time to the baseline\'s '
                              f'accuracy target (its best eval top-1 - {ACCURACY_MARGIN}), '
                              'reached on every seed (mean '
                              f'{"compute-only" if clock == "priced" else "wall"} ratio '
                              'over seeds)',
                    'measured': '; '.join(measured),
                    'met': not missed and r[clock]['mean'] <= TIME_TARGET})
  if row == 'V' and None not in (i, iii, v_study):
    targets.append({'target': 'test top-1: I < III < V',
                    'measured': f'I {i:.2f}, III {iii:.2f}, V {v_study:.2f}',
                    'met': i < iii < v_study})
  return targets


def _ratio(stat: Dict) -> str:
  std = '' if stat['std'] is None else f' ± {stat["std"]:.3f}'
  return f'{stat["mean"]:.3f}x{std}'


# ----------------------------------------------------------------------------------------
# The compute-only step ratios (python -m vivit_adapter.benchmark --out=...).
# ----------------------------------------------------------------------------------------

def read_benchmark(path: str, plan: Plan) -> Optional[Dict]:
  """Step times of the trainer's step alone, from a benchmark's OUT.json, as fractions of
  the baseline's step at the stage-2 frame count. None without a path."""
  if not path:
    return None
  with open(path) as f:
    result = json.load(f)
  # A case at the spatial dial (k > 0) is a row of its own, never one of the k = 0 rows.
  cases = {(c['mode'], c['frames'], step_report.case_adapter(c)): c for c in result['cases']
           if not step_report.case_dial(c)}
  dials = {(c['mode'], c['frames'], step_report.case_adapter(c), step_report.case_dial(c)): c
           for c in result['cases'] if step_report.case_dial(c)}
  steps = {key: (c.get('timing') or {}).get('step_s') for key, c in cases.items()}
  f1, f2 = plan.stage1_frames, plan.stage2_frames
  wanted = {'baseline': ('baseline', f2, 'none'), 'stage 1': ('baseline', f1, 'none'),
            'stage 2': ('stage2', f2, 'attention'),
            'stage 2 from cache': ('stage2+cached', f2, 'attention')}
  wanted.update({f'stage 2 from cache ({a})': ('stage2+cached', f2, a)
                 for a in ablation_plan.ADAPTERS if a != 'attention'
                 and steps.get(('stage2+cached', f2, a))})
  base = steps.get(wanted['baseline'])
  rows = {name: {'mode': m, 'frames': f, 'adapter': a, 'step_s': steps.get((m, f, a)),
                 'x_baseline': (steps[(m, f, a)] / base if base and steps.get((m, f, a))
                                else None)}
          for name, (m, f, a) in wanted.items()}
  for k in ablation_plan.DIAL_LAYERS:  # the dial's cached step and its extraction
    case = dials.get(('stage2+cached', f2, ablation_plan.DIAL_ADAPTER, k), {})
    step = (case.get('timing') or {}).get('step_s')
    if step:
      rows[f'stage 2 from cache ({ablation_plan.DIAL_ADAPTER}, k={k})'] = {
          'mode': 'stage2+cached', 'frames': f2, 'adapter': ablation_plan.DIAL_ADAPTER,
          'trainable_spatial_layers': k, 'step_s': step,
          'x_baseline': step / base if base else None,
          'extract_s_per_clip': case['timing'].get('extract_s_per_clip')}
  cached = cases.get(wanted['stage 2 from cache'], {})
  return {'path': path, 'command': result.get('meta', {}).get('command'), 'rows': rows,
          'extract_s_per_clip': (cached.get('timing') or {}).get('extract_s_per_clip')}


# ----------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------

def model_info(config) -> Dict:
  """The miniature's sizes, as the report's setup lines show them."""
  m, ds = config.model, config.dataset
  ph, pw, _ = m.patches.size
  return {'crop_size': ds.crop_size, 'patches': list(m.patches.size),
          'tokens_per_frame': (ds.crop_size // ph) * (ds.crop_size // pw),
          'hidden_size': m.hidden_size, 'spatial_layers': m.spatial_transformer.num_layers,
          'temporal_layers': m.temporal_transformer.num_layers,
          'adapter_width': m.adapter.hidden_size, 'batch_size': config.batch_size,
          'optimizer': f'{config.optimizer} (weight decay '
                       f'{config.optimizer_configs.weight_decay}), {config.lr_configs.schedule}'}


def machine_info() -> Dict:
  load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'load_average_1_5_15': [round(x, 2) for x in load]}


def build_report(rows: List[Row], plan: Plan, seeds: Sequence[int], results, *, tried,
                 choice: Dict[str, Schedule], wanted: Sequence[str], data, model: Dict,
                 image_report: Dict, command: str, started: Dict,
                 benchmark: Optional[Dict] = None) -> Dict:
  """Everything docs/ablation.{json,md,png} show, as one JSON-serialisable dict."""
  aggregated = [aggregate_row(r, results) for r in rows]
  by_name = {a['name']: a for a in aggregated}
  missing = [f'{a["name"]} seed {s}' for a in aggregated for s in seeds
             if s not in a['seeds']]
  missing += [f'{n} (sweep unfinished)' for n in wanted if n not in by_name]
  sweep_caches = {}
  if 'stage2' in tried:  # every stage-2 sweep run reads the chosen stage 1's cache
    sweep_caches['stage2'] = results.get(0, {}).get('caches', {}).get(
        tried['stage2'][0][0].cache)
  prices = step_prices(benchmark, plan.stage1_frames)
  timed = {row: time_to_accuracy(by_name, row, prices) for row in TIME_ROWS if row in by_name}
  return {
      'command': command, 'complete': not missing, 'missing': missing,
      'seeds': list(seeds), 'quick': plan.quick, 'plan': dataclasses.asdict(plan),
      'sweep': sweep_report(tried, choice, sweep_caches, plan.grids), 'rows': aggregated,
      'time_to_accuracy': timed,
      'time_to_accuracy_stats': {row: ratio_stats(e) for row, e in timed.items()},
      # The targets on V (the recipe), then the same checks on the variants that
      # change the recipe (TARGET_VARIANTS), reported beside V, never instead of it.
      'targets': check_targets(by_name, timed.get('V', [])) + [
          t for row in TARGET_VARIANTS if row in by_name
          for t in check_targets(by_name, timed.get(row, []), row)],
      'model': model, 'image_checkpoint': image_report, 'data': data.description,
      'data_dir': data.base_dir, 'dataset_overrides': list(data.overrides),
      'benchmark': benchmark, 'machine_at_start': started, 'machine_at_end': machine_info()}
