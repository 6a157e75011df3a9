"""docs/ablation.png (accuracy and wall time per row) and _curves.png (time to accuracy)."""

from typing import Dict

from vivit_adapter.studies.ablation.report import TABLES, TIME_ROWS


def plot(report: Dict, path: str) -> None:
  """Bar plot, one panel per table: test top-1 with std error bars, wall time below."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tables = [(t, title) for t, title in TABLES
            if any(r['table'] == t and r['seeds'] for r in report['rows'])]
  fig, axes = plt.subplots(2, max(len(tables), 1), figsize=(4.2 * max(len(tables), 1), 6),
                           squeeze=False)
  for col, (table, title) in enumerate(tables):
    rows = [r for r in report['rows'] if r['table'] == table and r['seeds']]
    names = [r['name'] for r in rows]
    for ax, metric, label in ((axes[0, col], 'test_top1', 'test top-1 (%)'),
                              (axes[1, col], 'wall_time_s', 'training wall time (s)')):
      means = [r['stats'][metric]['mean'] for r in rows]
      stds = [r['stats'][metric]['std'] or 0.0 for r in rows]
      ax.bar(names, means, yerr=stds, capsize=4, color='tab:blue' if col == 0 else 'tab:gray')
      ax.set_ylabel(label)
      ax.tick_params(axis='x', labelrotation=20)
    axes[0, col].set_title(title.split(' (')[0], fontsize=10)
  fig.suptitle('Synthetic ablation: mean ± std over seeds ' + str(report['seeds']))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_time_to_accuracy(report: Dict, path: str) -> bool:
  """Eval top-1 against training seconds: the baseline and each two-stage row, per seed.

  A two-stage row's stage 2 starts where its stage 1 ended; stage 1's own curve
  (few-frame clips) is drawn dotted. Returns False (nothing written) when no seed has
  the baseline and a two-stage row.
  """
  rows = {r['name']: r for r in report['rows']}
  base = rows.get('baseline')
  others = [rows[n] for n in TIME_ROWS if n in rows and base and
            set(rows[n]['seeds']) & set(base['seeds'])]
  if not others:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  colours = {'V': 'tab:blue', 'stage2_long': 'tab:green'}
  for i, seed in enumerate(base['seeds']):
    label = (lambda name: name) if i == 0 else (lambda name: None)
    b_curve = base['per_seed'][seed]['runs'][base['runs'][-1]]['eval_curve']
    ax.plot([p['train_time_s'] for p in b_curve], [p['top1'] for p in b_curve],
            color='tab:red', marker='.', label=label('baseline (end to end)'))
    for row in others:
      if seed not in row['per_seed']:
        continue
      s1, s2 = (row['per_seed'][seed]['runs'][k] for k in row['runs'])
      colour = colours.get(row['name'], 'tab:gray')
      if row is others[0]:
        ax.plot([p['train_time_s'] for p in s1['eval_curve']],
                [p['top1'] for p in s1['eval_curve']], color='tab:gray', linestyle=':',
                label=label('stage 1 (its own few-frame eval)'))
      ax.plot([s1['train_time_s'] + p['train_time_s'] for p in s2['eval_curve']],
              [p['top1'] for p in s2['eval_curve']], color=colour, marker='.',
              label=label(f'{row["name"]}: stage 2, after all of stage 1'))
  ax.set_xlabel('training seconds (evaluation excluded)')
  ax.set_ylabel('eval top-1 (%)')
  ax.set_title(f'Time to accuracy, seeds {base["seeds"]}')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True
