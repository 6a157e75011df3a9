"""docs/ablation.md: the report as markdown, keeping the hand-written notes of the last one."""

import os
from typing import Dict, List, Optional, Sequence

from vivit_adapter.studies.ablation.plan import EDGE_FACTORS, MAX_EXTENSIONS
from vivit_adapter.studies.ablation.report import ACCURACY_MARGIN, TABLES

# Hand-written notes between these markers survive regenerating the .md.
NOTES_BEGIN, NOTES_END = '<!-- notes -->', '<!-- /notes -->'
BENCHMARK_HINT = (
    'not given: run `python -m vivit_adapter.benchmark --variants=Ti/8x2 --resolution=64 '
    '--frames=8,32 --batch=16 --num_classes=12 --modes=baseline,stage2,stage2+cached '
    '--time --model_overrides=hidden_size=64,... --out=OUT` and pass '
    '`--benchmark_json=OUT.json`')


def _fmt(stat: Optional[Dict], digits: int = 2) -> str:
  if stat is None:
    return '—'
  std = '—' if stat['std'] is None else f'{stat["std"]:.{digits}f}'
  return f'{stat["mean"]:.{digits}f} ± {std}'


def _num(value, spec: str = '.1f') -> str:
  return '—' if value is None else format(value, spec)


def table_markdown(rows: List[Dict], table: str) -> List[str]:
  lines = ['| row | description | test top-1 (%) | test top-5 (%) | time, wall (s) | '
           'time, CPU (s) | seeds |', '|---|---|---|---|---|---|---|']
  for r in (r for r in rows if r['table'] == table):
    s = r['stats']
    lines.append(f'| {r["name"]} | {r["description"]} | {_fmt(s.get("test_top1"))} | '
                 f'{_fmt(s.get("test_top5"))} | {_fmt(s.get("wall_time_s"), 1)} | '
                 f'{_fmt(s.get("cpu_time_s"), 1)} | {len(r["seeds"])} |')
  return lines


def enlarged_test_markdown(rows: List[Dict]) -> List[str]:
  """Each row's test top-1 on the study's test split and on the enlarged one
  (studies/ablation/retest), with its gap to the baseline's, per seed and mean ± std;
  [] when no row was tested on the enlarged split."""
  tested = [r for r in rows if 'test_large_top1' in r['stats']]
  if not tested:
    return []
  base = next((r for r in tested if r['name'] == 'baseline'), None)
  count = next(iter(tested[0]['per_seed'].values()))['test_large_count']
  lines = ['', '## The enlarged test split', '',
           f'Each row\'s final models tested once more on {count:.0f} test clips from the '
           'study\'s generator (the same scene and seed: the study\'s test clips and new '
           'ones; `--enlarged_test_per_class`), for differences that the seed spread on '
           'the study\'s test split cannot decide. '
           'Evaluation only: the checkpoints are the rows\', nothing is chosen on it. '
           'When the baseline and a row both have it on every seed, the Targets table\'s '
           'accuracy target reads it.', '',
           '| row | test top-1 (%), study split | test top-1 (%), enlarged | per seed, '
           'enlarged | gap to the baseline, enlarged (points) | seeds |',
           '|---|---|---|---|---|---|']
  for r in tested:
    s = r['stats']
    per_seed = ', '.join(f'{p["test_large_top1"]:.2f}' for p in r['per_seed'].values())
    gap = ('' if base is None or r is base else
           f'{s["test_large_top1"]["mean"] - base["stats"]["test_large_top1"]["mean"]:+.2f}')
    lines.append(f'| {r["name"]} | {_fmt(s.get("test_top1"))} | '
                 f'{_fmt(s["test_large_top1"])} | {per_seed} | {gap} | {len(r["seeds"])} |')
  return lines


def sweep_markdown(sweep: Dict) -> List[str]:
  """Every configuration tried (the grid's, then its extensions'), the selection metric,
  its cost, the choice and whether it is still at an edge of what was tried."""
  lines = ['| route | learning rate | steps | warm-up | tried as | eval top-1 (%) | '
           'train wall (s) | train CPU (s) | chosen |', '|---|---|---|---|---|---|---|---|---|']
  for route, part in sweep.items():
    for c in part['configs']:
      lines.append(f'| {route} | {c["lr"]:.3g} | {c["steps"]} | {c["warmup"]} | '
                   f'{"extension" if c["extension"] else "grid"} | '
                   f'{_num(c.get("eval_top1"), ".2f")} | {_num(c.get("train_time_s"))} | '
                   f'{_num(c.get("train_cpu_s"))} | {"**yes**" if c["chosen"] else ""} |')
  lines.append('')
  for route, part in sweep.items():
    cost = part['cost']
    extraction = (f' + one extraction of the chosen stage 1\'s cache, '
                  f'{cost["extraction_s"]:.1f} s wall / {cost["extraction_cpu_s"]:.1f} s CPU'
                  if route == 'stage2' else '')
    edge = (f' **Still at an edge:** {", ".join(part["at_edge"])}: the best value may lie '
            'beyond what was tried.' if part['at_edge'] else '')
    lines.append(f'* {route}: {cost["runs"]} configuration(s), {cost["train_time_s"]:.1f} s '
                 f'wall / {cost["train_cpu_s"]:.1f} s CPU of training{extraction}.{edge}')
  return lines


def _setup_lines(report: Dict) -> List[str]:
  plan, data = report['plan'], report['data']
  m0, m1 = report['machine_at_start'], report['machine_at_end']
  size = (f', {data["resolution"]}x{data["resolution"]} px, {data["num_frames"]} frames '
          f'per clip, scene {data["scene"]}' if data.get('resolution') else '')
  lines = [
      f'* Command: `{report["command"]}`',
      f'* Machine: {m0["platform"]}, {m0["cpu_count"]} CPU cores, Python {m0["python"]}; '
      f'load average (1/5/15 min) {m0["load_average_1_5_15"]} at the start, '
      f'{m1["load_average_1_5_15"]} at the end (shared cores: wall times carry that noise; '
      'the CPU times of the process much less).',
      f'* Data: `{report["data_dir"]}` ({data["name"]}), {data["num_classes"]} classes, '
      f'splits {data["splits"]}{size}.'] + [f'* **Data note:** {n}' for n in data['notes']]
  lines += [
      f'* Model: {_model_line(report["model"])}',
      f'* Frames: stage 2 / baseline {plan["stage2_frames"]}, row V\'s stage 1 '
      f'{plan["stage1_frames"]}; every frozen run trains from a feature cache of '
      f'{plan["views"]} training view(s) per clip ({_views_why(data)}).',
      _image_line(report['image_checkpoint']),
      f'* Compute-only step time (the trainer\'s step alone): {_benchmark(report)}.',
      '* Metrics: multi-view test top-1/top-5 (%) of the row\'s final model on raw video; '
      'mean ± sample std (ddof=1) over seeds. A row\'s time is its whole route: every '
      'run\'s training time plus the extraction of every feature cache it reads '
      '(compilation and evaluation excluded); the image checkpoint is shared by all '
      'routes and counted in none.']
  return lines


def _views_why(data: Dict) -> str:
  if data['name'] == 'synthetic':
    return ('the miniature\'s training clip is deterministic: no scale jitter, flip or '
            'colour ops, and the clip covers the whole video, so further views would '
            'repeat it')
  return ('the miniature has no spatial augmentation; a video longer than the clip gets '
          'a random start, and the cache keeps one such clip per video')


def _model_line(m: Dict) -> str:
  return (f'{m["crop_size"]}x{m["crop_size"]} px crops, patches {m["patches"]} '
          f'({m["tokens_per_frame"]} tokens per frame), hidden {m["hidden_size"]}, spatial '
          f'{m["spatial_layers"]} layers, temporal {m["temporal_layers"]}, adapter width '
          f'{m["adapter_width"]}, batch {m["batch_size"]}, {m["optimizer"]}.')


def _image_line(img: Dict) -> str:
  if 'eval_top1' not in img:
    return f'* Image checkpoint: `{img["output"]}`, {img["task"]}.'
  return (f'* Image checkpoint (the ImageNet stand-in, shared by all rows and seeds): task '
          f'`{img["task"]}` ({img["num_classes"]} classes), held-out top-1 '
          f'{100 * img["eval_top1"]:.1f}%, {img["train_time_s"]:.0f}s training, '
          f'{img["settings"]["steps"]} steps.')


def _benchmark(report: Dict) -> str:
  bench = report.get('benchmark')
  if not bench:
    return BENCHMARK_HINT
  parts = [f'{name} ({r["mode"]}, {r["frames"]} frames) {_num(r["step_s"], ".4f")} s = '
           f'{_num(r["x_baseline"], ".3f")}x' for name, r in bench['rows'].items()
           if r['step_s'] is not None]  # a mode the benchmark did not time is left out
  return '; '.join(parts) + f' (from `{bench["path"]}`: `{bench["command"]}`)'


def _previous_notes(path: str) -> List[str]:
  if not os.path.exists(path):
    return [NOTES_BEGIN, NOTES_END]
  with open(path) as f:
    text = f.read()
  if NOTES_BEGIN not in text or NOTES_END not in text:
    return [NOTES_BEGIN, NOTES_END]
  start, end = text.index(NOTES_BEGIN), text.index(NOTES_END) + len(NOTES_END)
  return text[start:end].split('\n')


def time_to_accuracy_markdown(entries: Sequence[Dict], stats: Dict,
                              row: str = 'V') -> List[str]:
  if not entries:
    return [f'(no seed with both the baseline and {row} finished)']
  priced = all('priced' in e for e in entries)
  extra = ' baseline, compute-only (s) | ' + row + ', compute-only (s) | ratio, compute-only |'
  lines = [f'| seed | target eval top-1 (%) | baseline, wall (s) | {row}: stage 1 + '
           f'extraction + stage 2 = total, wall (s) | ratio, wall | baseline, CPU (s) | '
           f'{row}, CPU (s) | ratio, CPU |{extra if priced else ""} evaluations (baseline, '
           'stage 2) |',
           '|---|---|---|---|---|---|---|---|' + ('---|---|---|' if priced else '') + '---|']
  for e in entries:
    w, c = e['wall'], e['cpu']
    if e['reached']:
      stage2 = f'{w["total_s"] - w["stage1_s"] - w["extraction_s"]:.1f}'
      total, ratio, cpu, cpu_ratio = (f'{w["total_s"]:.1f}', f'{w["ratio"]:.3f}',
                                      f'{c["total_s"]:.1f}', f'{c["ratio"]:.3f}')
    else:
      stage2, total, ratio, cpu, cpu_ratio = ('not reached', '—', '—', 'not reached', '—')
    cells = ''
    if priced:
      q = e['priced']
      cells = (f' {q["baseline_s"]:.1f} | {q["total_s"]:.1f} | {q["ratio"]:.3f} |'
               if e['reached'] else f' {q["baseline_s"]:.1f} | not reached | — |')
    lines.append(f'| {e["seed"]} | {e["target_eval_top1"]:.2f} | {w["baseline_s"]:.1f} | '
                 f'{w["stage1_s"]:.1f} + {w["extraction_s"]:.1f} + {stage2} = {total} | '
                 f'{ratio} | {c["baseline_s"]:.1f} | {cpu} | {cpu_ratio} |{cells} '
                 f'{", ".join(str(n) for n in e["evaluations"])} |')
  reached = sum(e['reached'] for e in entries)
  priced_stat = f' | | {_fmt(stats.get("priced"), 3)}' if priced else ''
  lines.append(f'| mean ± std ({reached} of {len(entries)} seeds reached) | | | | '
               f'{_fmt(stats.get("wall"), 3)} | | | {_fmt(stats.get("cpu"), 3)}'
               f'{priced_stat} | |')
  return lines


def _time_lines(report: Dict, previous_path: str) -> List[str]:
  lines = ['', '## Whole-recipe cost: training time to the baseline\'s accuracy', '',
           'Per seed, the accuracy target\'s level (the baseline\'s best eval top-1 less '
           f'the {ACCURACY_MARGIN}-point tolerance of the accuracy target) and the training '
           'seconds each route needs to first reach it (two-stage: all of stage 1, all of '
           'the extraction, then stage 2 until the target). A two-stage route that never '
           'reaches it is "not reached": it misses the time target, whatever its time. A '
           'curve is known only at its evaluations, so the times are upper bounds, as '
           'coarse as the evaluation counts in the last column. With a benchmark '
           '(--benchmark_json), a third clock prices the same steps at the compute-only '
           'step times measured side by side in one run (and the extraction at its '
           'seconds per clip-view), which no other job\'s load moves; it leaves out the '
           'input pipeline and host work the wall clock includes. That clock, when present, '
           'decides the time target (the Targets table says which clock did).']
  timed = report.get('time_to_accuracy', {})
  for row, entries in timed.items():
    lines += ['', f'Row {row} against the baseline:', '']
    lines += time_to_accuracy_markdown(entries, report['time_to_accuracy_stats'][row], row)
  if any(timed.values()):
    name = os.path.splitext(os.path.basename(previous_path))[0] or 'ablation'
    lines += ['', f'![time to accuracy]({name}_curves.png)']
  if any('priced' in e for entries in timed.values() for e in entries):
    lines += ['', 'The front: each row\'s test top-1 against its whole route\'s '
              'compute-only cost, one point per seed (stage 1, extraction and every '
              'stage-2 step; the baseline\'s every step), the baseline stopped at fewer '
              'steps as a curve (its sweep at the chosen learning rate, seed 0). The '
              'enlarged test split when the baseline was tested on it.', '',
              f'![the front]({name}_front.png)']
  return lines


def markdown(report: Dict, previous_path: str = '') -> str:
  status = ('complete' if report['complete'] else
            f'**PARTIAL** — missing {len(report["missing"])} results: '
            f'{", ".join(report["missing"])}. Rerun the command above to complete it '
            '(finished runs are reused).')
  where = ('the synthetic action dataset' if report['data']['name'] == 'synthetic'
           else f'`{report["data"]["name"]}`')
  lines = [f'# Ablation on {where}' + (' (--quick smoke run)' if report['quick'] else ''),
           '', f'Status: {status}', ''] + _setup_lines(report)
  lines += ['', '## Sweep (seed 0; chosen on the validation split)', '',
            'Every configuration tried. Selection: the best final eval top-1 on the '
            'validation split; a tie goes to the cheaper configuration (fewer steps). '
            'When the baseline\'s or stage 2\'s choice is the highest or lowest learning '
            'rate or step count tried, that value grows one step past it (x or / '
            f'{EDGE_FACTORS["lr"]:g} the learning rate, {EDGE_FACTORS["steps"]:g} the '
            f'steps) and the route chooses again, at most {MAX_EXTENSIONS} times '
            '("extension" rows). '
            'Stage 1 is chosen by its own few-frame eval top-1, stage 2 trains from the '
            'chosen stage 1\'s cache. The test split is not looked at.', '']
  lines += sweep_markdown(report['sweep'])
  for table, title in TABLES:
    if any(r['table'] == table for r in report['rows']):
      lines += ['', f'## {title}', ''] + table_markdown(report['rows'], table)
  lines += enlarged_test_markdown(report['rows'])
  lines += _time_lines(report, previous_path)
  lines += ['', '## Targets', '', '| target | measured | met |', '|---|---|---|']
  lines += [f'| {t["target"]} | {t["measured"]} | {"yes" if t["met"] else "NO"} |'
            for t in report['targets']]
  lines += ['', '## Notes', ''] + _previous_notes(previous_path)
  return '\n'.join(lines) + '\n'
