"""docs/ablation.png (accuracy and time per row) and _curves.png (time to accuracy)."""

import itertools
from typing import Dict

from vivit_adapter.studies.ablation.report import ACCURACY_MARGIN, TABLES, TIME_ROWS


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot(report: Dict, path: str) -> None:
  """Bars, one column per table: test top-1 with std error bars, whole-route wall time."""
  plt = _pyplot()
  tables = [(t, title) for t, title in TABLES
            if any(r['table'] == t and r['seeds'] for r in report['rows'])]
  cols = max(len(tables), 1)
  fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 6), squeeze=False)
  for col, (table, title) in enumerate(tables):
    rows = [r for r in report['rows'] if r['table'] == table and r['seeds']]
    names = [r['name'] for r in rows]
    for ax, metric, label in ((axes[0, col], 'test_top1', 'test top-1 (%)'),
                              (axes[1, col], 'wall_time_s', 'route time, wall (s)')):
      means = [r['stats'][metric]['mean'] for r in rows]
      stds = [r['stats'][metric]['std'] or 0.0 for r in rows]
      ax.bar(names, means, yerr=stds, capsize=4, color='tab:blue' if col == 0 else 'tab:gray')
      ax.set_ylabel(label)
      ax.tick_params(axis='x', labelrotation=30, labelsize=8)
    axes[0, col].set_title(title.split(' (')[0].split(':')[0], fontsize=10)
  fig.suptitle('Ablation: mean ± std over seeds ' + str(report['seeds']))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_time_to_accuracy(report: Dict, path: str) -> bool:
  """Eval top-1 against training seconds (wall, and CPU), the baseline and V, per seed.

  V's stage 2 starts where its stage 1 and the extraction ended; stage 1's own curve
  (few-frame clips) is drawn dotted, each seed's accuracy target dashed. Returns False
  (nothing written) when no seed has the baseline and a two-stage row.
  """
  rows = {r['name']: r for r in report['rows']}
  base = rows.get('baseline')
  others = [rows[n] for n in TIME_ROWS if n in rows and base and
            set(rows[n]['seeds']) & set(base['seeds'])]
  if not others:
    return False
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  for ax, clock, extraction, name in ((axes[0], 'train_time_s', 'extraction_s', 'wall'),
                                      (axes[1], 'train_cpu_s', 'extraction_cpu_s', 'CPU')):
    for i, seed in enumerate(base['seeds']):
      _seed_curves(ax, base, others, seed, clock, extraction, first=i == 0)
    targets = sorted({e['target_eval_top1'] for e in report['time_to_accuracy'].get('V', [])})
    for i, target in enumerate(targets):
      ax.axhline(target, color='tab:red', linestyle='--', linewidth=0.8, alpha=0.6,
                 label=f'accuracy target (baseline best - {ACCURACY_MARGIN})' if i == 0 else None)
    ax.set_xlabel(f'training seconds, {name} (compilation and evaluation excluded)')
    ax.set_ylabel('eval top-1 (%)')
    ax.set_title(f'Time to accuracy ({name}), seeds {base["seeds"]}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _seed_curves(ax, base, others, seed, clock: str, extraction: str, first: bool) -> None:
  label = (lambda name: name) if first else (lambda name: None)
  b_curve = base['per_seed'][seed]['runs'][base['runs'][-1]]['eval_curve']
  ax.plot([p[clock] for p in b_curve], [p['top1'] for p in b_curve], color='tab:red',
          marker='.', label=label('baseline (end to end)'))
  colors = ('tab:blue', 'tab:green', 'tab:purple', 'tab:orange', 'tab:brown', 'tab:pink',
            'tab:olive', 'tab:cyan')
  for color, row in zip(itertools.cycle(colors), others):
    if seed not in row['per_seed']:
      continue
    per_seed = row['per_seed'][seed]
    *before, last = (per_seed['runs'][k] for k in row['runs'])  # I/III: no stage 1
    if before and row is others[0]:
      s1 = before[0]
      ax.plot([p[clock] for p in s1['eval_curve']], [p['top1'] for p in s1['eval_curve']],
              color='tab:gray', linestyle=':', label=label('stage 1 (its own few-frame eval)'))
    shift = sum(r[clock] for r in before) + per_seed[extraction]
    ax.plot([shift + p[clock] for p in last['eval_curve']], [p['top1'] for p in last['eval_curve']],
            color=color, marker='.', markersize=3,
            label=label(f'{row["name"]}: stage 2, after ' +
                        ('stage 1 + extraction' if before else 'extraction')))


def front_points(report: Dict) -> Dict:
  """The front picture's data: {'metric', 'rows': {row: [(cost, top-1), ...]},
  'baseline_curve': [(cost, top-1), ...]}, cost in compute-only seconds of the whole
  route (stage 1, extraction and every stage-2 step; the baseline's every step), top-1
  on the enlarged test split when the baseline has it on every seed, else the study's.
  None without compute-only prices."""
  rows = {r['name']: r for r in report['rows']}
  base = rows.get('baseline')
  timed = report.get('time_to_accuracy', {})
  if not base or not any('priced' in e for entries in timed.values() for e in entries):
    return None
  metric = 'test_large_top1' if 'test_large_top1' in base['stats'] else 'test_top1'
  points = {'baseline': []}
  for name, entries in timed.items():
    for e in entries:
      seed_rows = (rows[name]['per_seed'].get(e['seed']), base['per_seed'].get(e['seed']))
      if 'priced' not in e or None in seed_rows or metric not in seed_rows[0]:
        continue
      points.setdefault(name, []).append((e['priced']['whole_s'], seed_rows[0][metric]))
      points['baseline'].append((e['priced']['baseline_whole_s'], seed_rows[1][metric]))
  points['baseline'] = sorted(set(points['baseline']))
  price = next(e['priced']['baseline_whole_s'] / rows['baseline']['per_seed'][e['seed']][
      'runs'][base['runs'][-1]]['steps'] for entries in timed.values() for e in entries
               if 'priced' in e)
  configs = report.get('sweep', {}).get('baseline', {}).get('configs', [])
  chosen = report.get('sweep', {}).get('baseline', {}).get('chosen') or {}
  curve = sorted((c['steps'] * price, c[metric]) for c in configs
                 if c.get('lr') == chosen.get('lr') and metric in c)
  return {'metric': metric, 'rows': points, 'baseline_curve': curve}


def plot_front(report: Dict, path: str) -> bool:
  """Test top-1 against the whole route's compute-only cost, one point per row and seed,
  the baseline's curve (its sweep runs at the chosen learning rate, seed 0: the same
  training stopped at fewer steps) beside them. Returns False (nothing written) without
  compute-only prices or rows timed against the baseline."""
  data = front_points(report)
  if not data or len(data['rows']) < 2:
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8.5, 5.2))
  if data['baseline_curve']:
    xs, ys = zip(*data['baseline_curve'])
    ax.plot(xs, ys, '-', color='tab:red', alpha=0.6,
            label='baseline at fewer steps (its sweep at the chosen lr, seed 0)')
  markers = itertools.cycle('osD^v<>PX')
  for name, pts in data['rows'].items():
    xs, ys = zip(*pts)
    style = dict(color='tab:red', marker='*', s=140) if name == 'baseline' else dict(
        marker=next(markers), s=45)
    ax.scatter(xs, ys, label=name, alpha=0.85, **style)
  split = ('the enlarged test split' if data['metric'] == 'test_large_top1'
           else 'the test split')
  ax.set_xscale('log')
  ax.set_xlabel('whole route, compute-only seconds (stage 1 + extraction + stage 2; '
                'log scale)')
  ax.set_ylabel(f'test top-1 (%), {split}')
  ax.set_title('The front: accuracy against cost, one point per row and seed')
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True
