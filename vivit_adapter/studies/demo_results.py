"""`make demo`'s results: the runs' table, the two routes at equal accuracy, the verdict
and the time-to-accuracy picture (vivit_adapter.studies.demo runs the demo).

The accuracy both routes are timed to is the two-stage route's own final eval top-1
(the model it delivers). The two-stage route's time to it is all of stage 1, all of
the extraction, then stage 2 until its eval first reaches it; the baseline's, its
first evaluation at or above it, else "not reached within the cap". Times are the
trainer's clocks (compilation and evaluation excluded: `studies.runs.eval_curve`), wall
and CPU, read at evaluations only, as docs/ablation.md reads them (`runs.first_at`),
so each is an upper bound as coarse as the evaluation interval.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from vivit_adapter.studies import runs as study_runs

RESULTS_MD, RESULTS_JSON, CURVES_PNG = 'results.md', 'results.json', 'time_to_accuracy.png'
STUDY_DOC = 'docs/ablation.md'
# What the full study found (docs/ablation.md, 3 seeds; tests/test_demo.py checks these
# numbers against docs/ablation.json): the baseline row, the best two-stage row, and the
# latter's cost to the baseline's level on the compute-only clock (the study's Notes).
STUDY = {'baseline': ('baseline', 94.44, 0.24),
         'two_stage': ('V_stage1_x4_mlp', 92.64, 0.48),
         'cost': '0.30-0.39x', 'baseline_steps_to_level': '1200-1550'}
# The trainer's clocks: (name, eval-curve and summary key, extraction key).
CLOCKS = (('wall', 'train_time_s', 'seconds'), ('cpu', 'train_cpu_s', 'cpu_seconds'))


def study_verdict() -> str:
  """One sentence: what the full study found, with the link."""
  _, base, base_std = STUDY['baseline']
  name, two, two_std = STUDY['two_stage']
  return (f'Verdict of the full study ({STUDY_DOC}, 3 seeds, the baseline trained to '
          f'convergence): the best two-stage recipe ({name}: stage 1 4x longer, the mlp '
          f'adapter from the cache) reaches {two:.2f} ± {two_std:.2f} test top-1 against the '
          f'tuned baseline\'s {base:.2f} ± {base_std:.2f}, {base - two:.1f} points short, '
          f'for {STUDY["cost"]} of the compute time the baseline needs to reach its own '
          'level: much cheaper, not yet as accurate.')


# ----------------------------------------------------------------------------------------
# The runs' table.
# ----------------------------------------------------------------------------------------

def extraction_row(extraction: Dict[str, Any], stage2: Dict[str, Any]) -> Dict[str, Any]:
  """The feature extraction as a row of the table: its time, nothing trained."""
  return {'run': 'extraction',
          'label': f'feature extraction ({extraction["views"]} view(s) per clip)',
          'frames': stage2['frames'], 'trainable_params': 0,
          'frozen_params': stage2['frozen_params'], 'step_memory_mib': None,
          'train_time_s': extraction['seconds'], 'steps': None, 'eval_top1': None,
          'eval_top5': None, 'test_top1': None, 'test_top5': None,
          'reused': extraction['reused']}


def result_row(name: str, label: str, summary: Dict[str, Any]) -> Dict[str, Any]:
  """The figures the table shows for one run, from its summary.json."""
  test = summary.get('test') or {}
  return {
      'run': name, 'label': label,
      'frames': summary['config']['dataset']['num_frames'],
      'trainable_params': summary['params']['trainable'],
      'frozen_params': summary['params']['frozen'],
      'step_memory_mib': summary['compiled_step_memory_bytes']['total'] / 2**20,
      'train_time_s': summary['train_time_s'],
      'steps': summary['step'],
      'eval_top1': summary['eval']['top1'], 'eval_top5': summary['eval']['top5'],
      'test_top1': test.get('top1'), 'test_top5': test.get('top5'),
      'reused': summary['reused'],
  }


def _pct(value: Optional[float]) -> str:
  return '-' if value is None else f'{100 * value:.1f}'


def _num(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
  header = ('| run | frames | trainable params | frozen params | step memory (MiB) '
            '| train time (s) | steps | eval top-1 | eval top-5 | test top-1 | test top-5 |')
  lines = [header, '|' + '---|' * header.count(' | ') + '---|']
  for r in rows:
    lines.append(
        f'| {r["label"]} | {r["frames"]} | {r["trainable_params"]:,} | '
        f'{r["frozen_params"]:,} | {_num(r["step_memory_mib"], ".1f")} | '
        f'{r["train_time_s"]:.0f} | {_num(r["steps"], "d")} | {_pct(r["eval_top1"])} | '
        f'{_pct(r["eval_top5"])} | {_pct(r["test_top1"])} | {_pct(r["test_top5"])} |')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------
# The two routes at equal accuracy.
# ----------------------------------------------------------------------------------------

def accuracy_at(curve: Sequence[Dict[str, float]], seconds: float,
                clock: str) -> Optional[Dict[str, float]]:
  """The last evaluation at or before `seconds` on `clock`; None if there is none."""
  before = [p for p in curve if p[clock] <= seconds]
  return before[-1] if before else None


def two_stage_curve(stage1: Dict, extraction: Dict, stage2: Dict,
                    clock: str, extraction_key: str) -> List[Dict[str, float]]:
  """Stage 2's eval curve on the route's clock: offset by all of stage 1 and of the
  extraction (stage 1's own evaluations see its few-frame clips: not the route's)."""
  offset = stage1[clock] + extraction[extraction_key]
  return [dict(p, **{clock: offset + p[clock]}) for p in stage2['eval_curve']]


def compare(stage1: Dict, extraction: Dict, stage2: Dict, baseline: Dict) -> Dict[str, Any]:
  """Both routes' time to the two-stage route's final eval top-1, per clock, and the
  baseline's eval top-1 when the two-stage route's training was over."""
  target = 100 * stage2['eval']['top1']
  base_curve = baseline['eval_curve']
  out = {'target_eval_top1': target,
         'two_stage_test_top1': _test_top1(stage2), 'baseline_test_top1': _test_top1(baseline),
         'baseline_steps': baseline['step'], 'baseline_eval_top1': 100 * baseline['eval']['top1'],
         'baseline_best_eval_top1': max(p['top1'] for p in base_curve)}
  for name, clock, extraction_key in CLOCKS:
    curve = two_stage_curve(stage1, extraction, stage2, clock, extraction_key)
    # pylint: disable-next=protected-access
    two_t, base_t = (study_runs.first_at(c, target, clock)
                     for c in (curve, base_curve))
    total = stage1[clock] + extraction[extraction_key] + stage2[clock]
    out[name] = {
        'stage1_s': stage1[clock], 'extraction_s': extraction[extraction_key],
        'stage2_s': stage2[clock], 'two_stage_total_s': total,
        'baseline_total_s': baseline[clock],
        'two_stage_to_target_s': two_t, 'baseline_to_target_s': base_t,
        'ratio': None if base_t is None else two_t / base_t,
        'baseline_at_two_stage_total': accuracy_at(base_curve, total, clock)}
  return out


def _test_top1(summary: Dict) -> Optional[float]:
  top1 = (summary.get('test') or {}).get('top1')
  return None if top1 is None else 100 * top1


def _seconds(value: Optional[float], missing: str) -> str:
  return missing if value is None else f'{value:.0f}'


def comparison_table(c: Dict[str, Any], routes: Dict[str, str]) -> str:
  """Both routes in one table: what trains, time, accuracy, time to the target and the
  ratio, and each route's eval top-1 when the two-stage route's training was over."""
  w, target = c['wall'], c['target_eval_top1']
  test = {k: '-' if v is None else f'{v:.1f}'
          for k, v in (('two', c['two_stage_test_top1']), ('base', c['baseline_test_top1']))}
  at = w['baseline_at_two_stage_total']
  ratio = ('- (baseline: not reached)' if w['ratio'] is None else f'{w["ratio"]:.2f}x')
  lines = [f'| route | what trains | training time (s) | eval top-1 (%) | test top-1 (%) '
           f'| time to {target:.1f}% eval top-1 (s) | x the baseline\'s time to it '
           f'| eval top-1 at {w["two_stage_total_s"]:.0f} s (%) |',
           '|---|---|---|---|---|---|---|---|',
           f'| stage 1 + extraction + stage 2 | {routes["two_stage"]} | '
           f'{w["stage1_s"]:.0f} + {w["extraction_s"]:.0f} + {w["stage2_s"]:.0f} = '
           f'{w["two_stage_total_s"]:.0f} | {target:.1f} | {test["two"]} | '
           f'{w["two_stage_to_target_s"]:.0f} | {ratio} | {target:.1f} |',
           f'| baseline | {routes["baseline"]} | {w["baseline_total_s"]:.0f} | '
           f'{c["baseline_eval_top1"]:.1f} | {test["base"]} | '
           f'{_seconds(w["baseline_to_target_s"], "not reached within the cap")} | '
           f'{"-" if w["ratio"] is None else "1x"} | '
           f'{"-" if at is None else format(at["top1"], ".1f")} |']
  return '\n'.join(lines)


def comparison_lines(c: Dict[str, Any]) -> List[str]:
  """The ratio (or why there is none), the baseline at the two-stage route's total time,
  the same on the CPU clock."""
  w, cpu, target = c['wall'], c['cpu'], c['target_eval_top1']
  if w['ratio'] is None:
    ratio = (f'the baseline did not reach it within its cap of {c["baseline_steps"]} steps '
             f'({w["baseline_total_s"]:.0f} s; its best eval top-1 '
             f'{c["baseline_best_eval_top1"]:.1f}%), so there is no ratio (the study\'s '
             f'baseline needs {STUDY["baseline_steps_to_level"]} steps to its level)')
  else:
    ratio = (f'the baseline in {w["baseline_to_target_s"]:.0f} s: '
             f'{w["ratio"]:.2f}x the baseline\'s time')
  at = w['baseline_at_two_stage_total']
  at_text = ('no evaluation yet' if at is None else
             f'{at["top1"]:.1f}% (its evaluation at step {at["step"]}, '
             f'{at["train_time_s"]:.0f} s)')
  cpu_base = ('not reached within the cap' if cpu['ratio'] is None else
              f'{cpu["baseline_to_target_s"]:.0f} s ({cpu["ratio"]:.2f}x)')
  return [
      f'Time to {target:.1f}% eval top-1 (the two-stage route\'s final): the two-stage '
      f'route in {w["two_stage_to_target_s"]:.0f} s; {ratio}.',
      f'The baseline\'s eval top-1 at the two-stage route\'s total training time '
      f'({w["two_stage_total_s"]:.0f} s): {at_text}.',
      f'On the CPU clock (all threads), to {target:.1f}%: two-stage '
      f'{cpu["two_stage_to_target_s"]:.0f} s, baseline {cpu_base}; whole runs: two-stage '
      f'{cpu["two_stage_total_s"]:.0f} s, baseline {cpu["baseline_total_s"]:.0f} s.']


# ----------------------------------------------------------------------------------------
# The picture.
# ----------------------------------------------------------------------------------------

def plot(path: str, stage1: Dict, extraction: Dict, stage2: Dict, baseline: Dict,
         c: Dict[str, Any]) -> None:
  """Eval top-1 against training seconds (wall, compilation and evaluation excluded):
  the baseline, and stage 2 after all of stage 1 and the extraction."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  clock, w = 'train_time_s', c['wall']
  fig, ax = plt.subplots(figsize=(8, 4.8))
  base = baseline['eval_curve']
  ax.plot([p[clock] for p in base], [p['top1'] for p in base], color='tab:red',
          marker='.', label='baseline (end to end, 32 frames)')
  s1 = stage1['eval_curve']
  ax.plot([p[clock] for p in s1], [p['top1'] for p in s1], color='tab:gray', linestyle=':',
          marker='.', markersize=3, label='stage 1 (its own 8-frame eval)')
  ax.axvspan(w['stage1_s'], w['stage1_s'] + w['extraction_s'], color='tab:gray', alpha=0.2,
             label='feature extraction')
  two = two_stage_curve(stage1, extraction, stage2, clock, 'seconds')
  ax.plot([p[clock] for p in two], [p['top1'] for p in two], color='tab:blue', marker='.',
          markersize=4, label='stage 2 from the cache, after stage 1 + extraction')
  ax.axhline(c['target_eval_top1'], color='tab:blue', linestyle='--', linewidth=0.8,
             label=f'the two-stage route\'s eval top-1 ({c["target_eval_top1"]:.1f}%)')
  ax.axvline(w['two_stage_total_s'], color='tab:blue', linestyle=':', linewidth=0.8)
  # A capped baseline is not the study's: say what the converged one reaches.
  ax.text(0.01, 0.98, f'full study ({STUDY_DOC}), test top-1: converged baseline '
          f'{STUDY["baseline"][1]:.1f}, best two-stage recipe {STUDY["two_stage"][1]:.1f}',
          transform=ax.transAxes, va='top', fontsize=8,
          bbox=dict(facecolor='white', edgecolor='none', alpha=0.8))
  ax.set_ylim(top=104)  # room for it above 100%
  ax.set_xlabel('training seconds, wall (compilation and evaluation excluded)')
  ax.set_ylabel('eval top-1 (%)')
  ax.set_title('make demo: time to accuracy')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------------------
# The files.
# ----------------------------------------------------------------------------------------

NOTE = ('Percentages. Times are the trainer\'s clocks: training only, compilation and '
        'evaluation excluded (the extraction: reading, decoding, the '
        'frozen forward pass and writing the cache, compilation excluded); read at '
        'evaluations, so a time to accuracy is an upper bound. Step memory is the '
        'compiled train step\'s (XLA memory analysis).')


def results_text(rows, comparison, routes: Dict[str, str]) -> str:
  return '\n\n'.join([comparison_table(comparison, routes), *comparison_lines(comparison),
                      study_verdict(), markdown_table(rows), NOTE]) + '\n'


def write_results(workdir: str, rows, comparison, routes: Dict[str, str],
                  extra: Dict[str, Any]) -> str:
  """Writes results.md and results.json; returns the markdown."""
  text = results_text(rows, comparison, routes)
  with open(os.path.join(workdir, RESULTS_MD), 'w') as f:
    f.write(text)
  with open(os.path.join(workdir, RESULTS_JSON), 'w') as f:
    json.dump({'runs': {r['run']: r for r in rows}, 'comparison': comparison,
               'routes': routes, 'study_verdict': study_verdict(), **extra},
              f, indent=2, sort_keys=True)
  return text
