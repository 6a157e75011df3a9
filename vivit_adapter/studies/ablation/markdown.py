"""docs/ablation.md: the report as markdown, keeping the hand-written notes of the last one."""

import os
from typing import Dict, List, Optional, Sequence

from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation.report import TABLES

# Hand-written notes between these markers survive regenerating the .md.
NOTES_BEGIN, NOTES_END = '<!-- notes -->', '<!-- /notes -->'


def _fmt(stat: Optional[Dict], digits: int = 2) -> str:
  if stat is None:
    return '—'
  std = '—' if stat['std'] is None else f'{stat["std"]:.{digits}f}'
  return f'{stat["mean"]:.{digits}f} ± {std}'


def table_markdown(rows: List[Dict], table: str) -> List[str]:
  lines = ['| row | description | test top-1 (%) | test top-5 (%) | wall time (s) | seeds |',
           '|---|---|---|---|---|---|']
  for r in (r for r in rows if r['table'] == table):
    s = r['stats']
    lines.append(f'| {r["name"]} | {r["description"]} | {_fmt(s.get("test_top1"))} | '
                 f'{_fmt(s.get("test_top5"))} | {_fmt(s.get("wall_time_s"), 1)} | '
                 f'{len(r["seeds"])} |')
  return lines


def _setup_lines(report: Dict) -> List[str]:
  plan, img, data = report['plan'], report['image_checkpoint'], report['data']
  m0, m1 = report['machine_at_start'], report['machine_at_end']
  return [
      f'* Command: `{report["command"]}`',
      f'* Machine: {m0["platform"]}, {m0["cpu_count"]} CPU cores, Python {m0["python"]}; '
      f'load average (1/5/15 min) {m0["load_average_1_5_15"]} at the start, '
      f'{m1["load_average_1_5_15"]} at the end (the cores are shared, so wall times '
      'carry that noise; all rows share it).',
      f'* Data: `{report["data_dir"]}`, {data["num_classes"]} classes, splits '
      f'{data["splits"]}, {data["resolution"]}x{data["resolution"]} px, '
      f'{data["num_frames"]} frames per clip, scene {data["scene"]}.',
      f'* Frames: stage 2 / baseline {plan["stage2_frames"]}, row V\'s stage 1 '
      f'{plan["stage1_frames"]}; steps per run kind, as run: {_steps_run(report)} (every '
      'end-to-end run, the baseline included, trains for experiments/synthetic_stage1.py\'s '
      'steps; every frozen run for experiments/synthetic_stage2.py\'s).',
      f'* Image checkpoint (the ImageNet stand-in, shared by all rows and seeds, its cost '
      f'not in any row): task `{img["task"]}` ({img["num_classes"]} classes), held-out '
      f'top-1 {100 * img["eval_top1"]:.1f}%, {img["train_time_s"]:.0f}s training, '
      f'{img["settings"]["steps"]} steps.',
      '* Metrics: multi-view test top-1/top-5 (%) of the row\'s final model; mean ± '
      'sample std (ddof=1) over seeds; wall time = the sum of the row\'s runs\' '
      'train_time_s (compilation and evaluation excluded; V includes its stage 1).']


def _steps_run(report: Dict) -> Dict[str, List[int]]:
  """{run kind: the step counts its finished runs used}: one each unless settings changed."""
  steps = {}
  for row in report['rows']:
    for seed_result in row['per_seed'].values():
      for record in seed_result['runs'].values():
        steps.setdefault(record['kind'], set()).add(record['steps'])
  return {k: sorted(v) for k, v in sorted(steps.items())}


def _previous_notes(path: str) -> List[str]:
  if not os.path.exists(path):
    return [NOTES_BEGIN, NOTES_END]
  with open(path) as f:
    text = f.read()
  if NOTES_BEGIN not in text or NOTES_END not in text:
    return [NOTES_BEGIN, NOTES_END]
  start, end = text.index(NOTES_BEGIN), text.index(NOTES_END) + len(NOTES_END)
  return text[start:end].split('\n')


def time_to_accuracy_markdown(entries: Sequence[Dict], row: str = 'V') -> List[str]:
  if not entries:
    return [f'(no seed with both the baseline and {row} finished)']
  lines = [f'| seed | target eval top-1 (%) | baseline (s) | {row}: stage 1 + stage 2 (s) | '
           f'{row} / baseline | evaluations (baseline, stage 2) |', '|---|---|---|---|---|---|']
  for e in entries:
    lines.append(f'| {e["seed"]} | {e["target_eval_top1"]:.2f} | {e["baseline_s"]:.1f} | '
                 f'{e["v_stage1_s"]:.1f} + {e["v_s"] - e["v_stage1_s"]:.1f} = '
                 f'{e["v_s"]:.1f} | {e["ratio"]:.3f} | '
                 f'{", ".join(str(n) for n in e.get("evaluations", []))} |')
  if len(entries) > 1:
    mean, std = ablation_report.mean_std([e['ratio'] for e in entries])
    lines.append(f'| mean ± std | | | | {mean:.3f} ± {std:.3f} | |')
  return lines


def markdown(report: Dict, previous_path: str = '') -> str:
  status = ('complete' if report['complete'] else
            f'**PARTIAL** — missing {len(report["missing"])} row x seed results: '
            f'{", ".join(report["missing"])}. Rerun the command above to complete it '
            '(finished runs are reused).')
  lines = ['# Ablation on the synthetic action dataset' +
           (' (--quick smoke run)' if report['quick'] else ''), '',
           f'Status: {status}', ''] + _setup_lines(report)
  for table, title in TABLES:
    if any(r['table'] == table for r in report['rows']):
      lines += ['', f'## {title}', ''] + table_markdown(report['rows'], table)
  lines += ['', '## Whole-recipe cost: training time to the same accuracy', '',
            'Per seed, the eval top-1 both the baseline and the two-stage row reach (the '
            'lower of their best), and the training seconds each needs to first reach it '
            '(two-stage: all of stage 1, then stage 2 until the target). A curve is known '
            'only at its evaluations, so the times are upper bounds, as coarse as the '
            'evaluation counts in the last column.']
  timed = report.get('time_to_accuracy', {})
  for row, entries in timed.items():
    lines += ['', f'Row {row} against the baseline:', '']
    lines += time_to_accuracy_markdown(entries, row)
  if any(timed.values()):
    name = os.path.splitext(os.path.basename(previous_path))[0] or 'ablation'
    lines += ['', f'![time to accuracy]({name}_curves.png)']
  lines += ['', '## Targets', '', '| target | measured | met |', '|---|---|---|']
  lines += [f'| {t["target"]} | {t["measured"]} | {"yes" if t["met"] else "NO"} |'
            for t in report['targets']]
  lines += ['', '## Notes', ''] + _previous_notes(previous_path)
  return '\n'.join(lines) + '\n'
