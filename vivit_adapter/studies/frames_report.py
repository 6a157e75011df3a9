"""The frames study's numbers and docs (docs/frames.{json,md,png}).

Per frame count: each row's test top-1 over seeds (the ablation's `aggregate_row`) and
the recipe's time to the baseline's accuracy target at that frame count (the ablation's
`time_to_accuracy`: stage 1 and the extraction counted whole). Over the frame counts
together, the recipe's stage 1 is counted once (it serves every frame count): its
time plus each frame count's extraction and stage 2, against the baselines' times
summed. Both are shown; neither replaces the other.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

from vivit_adapter.benchmarks import step_report
from vivit_adapter.studies import frames as frames_study
from vivit_adapter.studies.ablation import markdown as ablation_markdown
from vivit_adapter.studies.ablation import plots as ablation_plots
from vivit_adapter.studies.ablation import report as ablation_report

CLOCKS = ('wall', 'cpu', 'priced')
CLOCK_NAMES = {'wall': 'wall', 'cpu': 'CPU', 'priced': 'compute-only'}


def prices_at(benchmark_json: str, plan, frames: int) -> Optional[Dict]:
  """The compute-only step prices at `frames` (None without a benchmark or its cases)."""
  if not benchmark_json:
    return None
  def prices(at):
    bench = ablation_report.read_benchmark(
        benchmark_json, dataclasses.replace(plan.base, stage2_frames=at))
    return ablation_report.step_prices(bench, plan.base.stage1_frames)
  out, sweep = prices(frames), plan.base.stage2_frames
  if out is not None:
    # A stage 1 that is the baseline's run at the sweep's frame count (the 'b' recipes)
    # at that frame count's baseline step, not this one's.
    at_sweep = out if frames == sweep else prices(sweep)
    if at_sweep is not None:
      out['baseline_at'] = {sweep: at_sweep['baseline']}
  return out


def stage1_once(per_frames: Dict[int, List[Dict]]) -> List[Dict]:
  """Per seed with every frame count reached: stage 1 once + every frame count's
  extraction and stage 2, against the baselines' times summed, on each clock."""
  seeds = set.intersection(*[{e['seed'] for e in entries if e['reached']}
                             for entries in per_frames.values()]) if per_frames else set()
  out = []
  for seed in sorted(seeds):
    entries = [next(e for e in v if e['seed'] == seed) for v in per_frames.values()]
    entry = {'seed': seed}
    for clock in (c for c in CLOCKS if all(c in e for e in entries)):
      stage1 = entries[0][clock]['stage1_s']
      recipe = stage1 + sum(e[clock]['total_s'] - e[clock]['stage1_s'] for e in entries)
      base = sum(e[clock]['baseline_s'] for e in entries)
      entry[clock] = {'recipe_s': recipe, 'baseline_s': base, 'ratio': recipe / base}
    out.append(entry)
  return out


def _stats(entries: Sequence[Dict]) -> Dict:
  return {c: dict(zip(('mean', 'std'), ablation_report.mean_std([e[c]['ratio']
                                                                  for e in entries])))
          for c in CLOCKS if entries and all(c in e for e in entries)}


def growth_report(grown: Dict[int, Dict[str, List]]) -> Dict:
  """{frames: {route: [{key, lr, steps, eval_top1, train_time_s}]}}: the schedules
  tried (the steps grown, then the learning-rate check)."""
  return {str(f): {route: [{'key': run.key, 'lr': run.schedule.lr,
                            'steps': run.schedule.steps,
                            'eval_top1': None if s is None else 100 * s['eval']['top1'],
                            'train_time_s': None if s is None else s['train_time_s']}
                           for run, s in tried] for route, tried in by_route.items()}
          for f, by_route in grown.items()}


def frames_table(plan, by_name: Dict[str, Dict], benchmark_json: str) -> List[Dict]:
  """Per frame count: the baseline's and each recipe's test top-1, and the recipes'
  time to the baseline's accuracy target (stage 1 counted whole)."""
  out = []
  for frames in plan.frames:
    base = by_name.get(frames_study.row_name('baseline', frames))
    prices = prices_at(benchmark_json, plan, frames)
    recipes = {}
    for key, route in plan.recipes:
      name = frames_study.row_name(route, frames)
      timed = (ablation_report.time_to_accuracy({'baseline': base, name: by_name[name]},
                                                name, prices)
               if base and name in by_name else [])
      recipes[key] = {'row': name, 'time_to_accuracy': timed,
                         'ratio': ablation_report.ratio_stats(timed),
                         'test_top1': by_name.get(name, {}).get('stats', {}).get('test_top1')}
    out.append({'frames': frames, 'stride': plan.stride(frames), 'priced': prices is not None,
                'baseline': frames_study.row_name('baseline', frames),
                'baseline_test_top1': (base or {}).get('stats', {}).get('test_top1'),
                'recipes': recipes})
  return out


def recipe_label(key: str, plan) -> str:
  """'k=1' (stage 1 at its own few frames) or 'stage 1 = baseline 32f, k=0'."""
  if key.startswith('b'):
    return f'stage 1 = baseline {plan.base.stage2_frames}f, k={key[1:]}'
  return f'k={key}'


def targets(plan, by_name: Dict[str, Dict], table: List[Dict]) -> List[Dict]:
  """The ablation's accuracy and time targets (`check_targets`) for each recipe row at
  each frame count, against the baseline at that frame count."""
  out = []
  for t in table:
    base = by_name.get(t['baseline'])
    for k, recipe in t['recipes'].items():
      if base and recipe['row'] in by_name:
        found = ablation_report.check_targets(
            {'baseline': base, recipe['row']: by_name[recipe['row']]},
            recipe['time_to_accuracy'], recipe['row'])
        out += [dict(target, frames=t['frames'], recipe=k) for target in found]
  return out


def memory_table(paths: Sequence[str], frames: Sequence[int]) -> List[Dict]:
  """Compiled memory per device (GiB, compile-only) of every case of the benchmark
  files at the study's frame counts: one row per file, variant, batch and mode."""
  rows = {}
  for path in paths:
    with open(path) as f:
      cases = json.load(f)['cases']
    for c in cases:
      if c['frames'] in frames and (c.get('memory') or {}).get('total'):
        key = (path, c['variant'], c['resolution'], c['batch'], step_report.mode_label(c))
        rows.setdefault(key, {})[str(c['frames'])] = c['memory']['total'] / 2**30
  return [{'source': p, 'variant': v, 'resolution': r, 'batch': b, 'mode': m, 'total_gib': g}
          for (p, v, r, b, m), g in rows.items()]


def aggregate_rows(rows, seeded: Dict[int, List], results: Dict) -> List[Dict]:
  """`ablation_report.aggregate_row` of each of `rows` (`frames.make_rows`) over the
  seeds, a seed's own rows (`seeded`, `frames.seed_rows`) read in their places: on a
  seed that reran a collapsed run, the rerun, and every run or cache that starts from
  it, stand where the usual one stands, their record keeping their own key and schedule,
  and the row's per-seed 'reruns' maps {usual key: rerun key}."""
  remapped, own_runs = {}, {}
  for seed, done in results.items():
    own = {r.name: r for r in seeded.get(seed, rows)}
    runs, caches = {}, {}
    for row in (r for r in rows if r.name in own):
      runs.update((a.key, b) for a, b in zip(row.runs, own[row.name].runs))
      caches.update(zip(row.caches, own[row.name].caches))
    own_runs[seed] = runs
    remapped[seed] = {
        'runs': {a: done['runs'][b.key] for a, b in runs.items() if b.key in done['runs']},
        'caches': {a: done['caches'][b] for a, b in caches.items() if b in done['caches']}}
  aggregated = [ablation_report.aggregate_row(r, remapped) for r in rows]
  for a in aggregated:
    for seed, p in a['per_seed'].items():
      p['reruns'] = {}
      for usual, record in p['runs'].items():
        run = own_runs[seed][usual]
        record.update(key=run.key, schedule=dataclasses.asdict(run.schedule))
        if run.key != usual:
          p['reruns'][usual] = run.key
  return aggregated


def build_report(rows, plan, seeds: Sequence[int], results, *, tried, choice, grown,
                 schedules, data, model: Dict, image_report: Dict, command: str,
                 started: Dict, benchmark_json: str = '',
                 memory_jsons: Sequence[str] = (), seeded: Optional[Dict] = None,
                 restarts: Sequence[Dict] = ()) -> Dict:
  """Everything docs/frames.{json,md,png} show, as one JSON-serialisable dict.
  `seeded`: {seed: its rows} (`frames.seed_rows`), when a seed's rows differ from
  `rows` by a rerun collapsed run (`restarts`)."""
  aggregated = aggregate_rows(rows, seeded or {}, results)
  by_name = {a['name']: a for a in aggregated}
  missing = [f'{a["name"]} seed {s}' for a in aggregated for s in seeds
             if s not in a['seeds']]
  expected = {frames_study.row_name(r, f) for f in plan.frames for r in plan.routes
              if r != 'stage1'}
  missing += [f'{n} (its schedule is not chosen yet)' for n in sorted(expected - set(by_name))]
  table = frames_table(plan, by_name, benchmark_json)
  once = {}
  for key, _ in plan.recipes:
    entries = stage1_once({t['frames']: t['recipes'][key]['time_to_accuracy']
                           for t in table})
    once[key] = {'per_seed': entries, 'ratio': _stats(entries)}
  return {
      'command': command, 'complete': not missing, 'missing': missing,
      'seeds': list(seeds), 'quick': plan.base.quick, 'frames': list(plan.frames),
      'dials': list(plan.dials), 'baseline_dials': list(plan.baseline_dials),
      'recipes': {key: recipe_label(key, plan) for key, _ in plan.recipes},
      'adapter': frames_study.ADAPTER,
      'clip_frames': plan.clip_frames, 'plateau_gain': frames_study.PLATEAU_GAIN,
      'max_doublings': plan.max_doublings,
      'sweep': ablation_report.sweep_report(tried, choice, {}, plan.base.grids),
      'steps_growth': growth_report(grown),
      'schedules': {str(f): {r: dataclasses.asdict(s) for r, s in by_route.items()}
                    for f, by_route in schedules.items()},
      'rows': aggregated, 'restarts': list(restarts), 'table': table, 'stage1_once': once,
      'targets': targets(plan, by_name, table),
      'memory': memory_table([p for p in (benchmark_json, *memory_jsons) if p], plan.frames),
      'model': model, 'image_checkpoint': image_report, 'data': data.description,
      'data_dir': data.base_dir, 'benchmark_json': benchmark_json or None,
      'machine_at_start': started, 'machine_at_end': ablation_report.machine_info()}


# ----------------------------------------------------------------------------------------
# docs/frames.md and docs/frames.png.
# ----------------------------------------------------------------------------------------

# The ablation's cell formats (mean ± std; a number or '—'), so the two pages read alike.
_fmt = ablation_markdown._fmt  # pylint: disable=protected-access
_num = ablation_markdown._num  # pylint: disable=protected-access


def _ratio_cell(stats: Dict, entries: Sequence[Dict]) -> str:
  reached = sum(e['reached'] for e in entries)
  cells = [f'{CLOCK_NAMES[c]} {_fmt(stats[c], 3)}' for c in CLOCKS if c in stats]
  return (f'{"; ".join(cells)} ({reached} of {len(entries)} seeds reached)' if entries
          else '—')


def table_markdown(report: Dict) -> List[str]:
  lines = ['| frames (stride) | row | test top-1 (%) | gap to the baseline (points) | '
           'time to the baseline\'s accuracy target, ratio to the baseline\'s |',
           '|---|---|---|---|---|']
  for t in report['table']:
    base = t['baseline_test_top1']
    lines.append(f'| {t["frames"]} ({t["stride"]}) | {t["baseline"]} | {_fmt(base)} | | |')
    for r in t['recipes'].values():
      gap = ('—' if base is None or r['test_top1'] is None
             else f'{r["test_top1"]["mean"] - base["mean"]:+.2f}')
      lines.append(f'| | {r["row"]} | {_fmt(r["test_top1"])} | {gap} | '
                   f'{_ratio_cell(r["ratio"], r["time_to_accuracy"])} |')
  return lines


def restart_lines(report: Dict) -> List[str]:
  return [f'* seed {r["seed"]}, {r["route"]} at {r["frames"]} frames: `{r["collapsed"]}` '
          f'ended at training loss {r["loss"]:.4f}; rerun as `{r["rerun"]}`.'
          for r in report['restarts']] or ['(none)']


def growth_markdown(report: Dict) -> List[str]:
  lines = ['| frames | route | learning rate | steps | eval top-1 (%) | train wall (s) | '
           'kept |', '|---|---|---|---|---|---|---|']
  for frames, by_route in report['steps_growth'].items():
    for route, tried in by_route.items():
      kept = report['schedules'].get(frames, {}).get(route, {})
      for t in tried:
        is_kept = (t['steps'], t['lr']) == (kept.get('steps'), kept.get('lr'))
        lines.append(f'| {frames} | {route} | {_num(t["lr"], ".3g")} | {t["steps"]} | '
                     f'{_num(t["eval_top1"], ".2f")} | {_num(t["train_time_s"])} | '
                     f'{"**yes**" if is_kept else ""} |')
  return lines


def reward_lines(report: Dict) -> List[str]:
  """Test top-1 from the fewest to the most frames, per route: the data's claim."""
  routes = [('baseline', [t['baseline_test_top1'] for t in report['table']])]
  routes += [(f'recipe {label}', [t['recipes'][key]['test_top1'] for t in report['table']])
             for key, label in report['recipes'].items()]
  frames = [t['frames'] for t in report['table']]
  lines = []
  for name, stats in routes:
    if stats[0] and stats[-1]:
      lines.append(f'* {name}: test top-1 {stats[0]["mean"]:.2f} at {frames[0]} frames, '
                   f'{stats[-1]["mean"]:.2f} at {frames[-1]} '
                   f'({stats[-1]["mean"] - stats[0]["mean"]:+.2f} points).')
  return lines or ['(not measured yet)']


def memory_lines(report: Dict) -> List[str]:
  if not report['memory']:
    return ['(no case at these frame counts: give --benchmark_json for the miniature and '
            '--memory_json for ViViT-B, e.g. docs/results/b16x2_224_memory.json)']
  frames = [str(f) for f in report['frames']]
  lines = ['| source | variant | px | batch | mode | ' + ' | '.join(f'{f} frames' for f in frames)
           + ' |', '|---|---|---|---|---|' + '---|' * len(frames)]
  for r in report['memory']:
    cells = ' | '.join(_num(r['total_gib'].get(f), '.3f') for f in frames)
    lines.append(f'| `{r["source"]}` | {r["variant"]} | {r["resolution"]} | {r["batch"]} | '
                 f'{r["mode"]} | {cells} |')
  return lines


def markdown(report: Dict, previous_path: str = '') -> str:
  status = ('complete' if report['complete'] else
            f'**PARTIAL** — missing {len(report["missing"])} results: '
            f'{", ".join(report["missing"])}. Rerun the command to complete it (finished '
            'runs are reused).')
  name = os.path.splitext(os.path.basename(previous_path))[0] or 'frames'
  lines = [f'# Where the saving grows: {", ".join(map(str, report["frames"]))} frames' +
           (' (--quick smoke run)' if report['quick'] else ''), '',
           f'Status: {status}', '', f'Command: `{report["command"]}`', '',
           f'Data: the synthetic long_events clips ({report["clip_frames"]} frames; the '
           'class is the number of one-frame flashes, docs/data.md), splits '
           f'{report["data"].get("splits")}. A run of F frames reads the whole clip at '
           f'stride {report["clip_frames"]} / F; a feature cache stores that many views '
           'per training clip.', '',
           '## Sweep at the sweep\'s frame count (seed 0; chosen on validation)', '']
  lines += ablation_markdown.sweep_markdown(report['sweep'])
  lines += ['', '## Steps at the other frame counts (seed 0)', '',
            'The sweep\'s learning rate and warm-up, at its steps S, then 2S; a doubling is '
            f'kept when it raises the final validation top-1 by more than '
            f'{report["plateau_gain"]:g} point(s), and then doubled again (at most '
            f'{report["max_doublings"]} times). Then the learning rate is checked: the '
            'sweep\'s runner-up learning rate for that route at the kept steps, its steps '
            'grown by the same rule when it does at least as well; the better of the two '
            'on validation is kept. The baseline and every stage 2 alike.', '']
  lines += growth_markdown(report)
  lines += ['', '## Per frame count', '',
            'Test top-1, mean ± std over seeds; time to accuracy as the ablation\'s '
            '(docs/ablation.md): to the baseline\'s best eval top-1 less '
            f'{ablation_report.ACCURACY_MARGIN} at that frame count, the recipe\'s stage 1 and '
            'extraction counted whole, compilation and evaluation excluded; compute-only '
            'with --benchmark_json.', '']
  lines += table_markdown(report)
  lines += ['', '**Collapsed runs, rerun.** A row run whose training loss ends no lower '
            f'than ln(classes) - {frames_study.COLLAPSE_TOL:g} learned nothing (it predicts '
            'no better than the class prior); on that seed it is rerun at its route\'s '
            'next lower swept learning rate, same steps, any route alike, and the row (a '
            'stage 2 from that run too) uses the rerun; the collapsed run is not charged.',
            '']
  lines += restart_lines(report)
  lines += ['', '## Stage 1 counted once over the frame counts', '',
            '| recipe | ratio (recipe: stage 1 once + every extraction and stage 2; baseline: '
            'every frame count) | seeds |', '|---|---|---|']
  for k, once in report['stage1_once'].items():
    cells = '; '.join(f'{CLOCK_NAMES[c]} {_fmt(once["ratio"][c], 3)}' for c in CLOCKS
                      if c in once['ratio']) or '—'
    lines.append(f'| {report["recipes"][k]} | {cells} | {len(once["per_seed"])} |')
  lines += ['', f'![ratio and accuracy against frames]({name}.png)']
  lines += ['', '## Does the data reward frames?', ''] + reward_lines(report)
  lines += ['', '## Targets per frame count (the ablation\'s)', '',
            '| frames | recipe | target | measured | met |', '|---|---|---|---|---|']
  lines += [f'| {t["frames"]} | {report["recipes"][t["recipe"]]} | {t["target"]} | '
            f'{t["measured"]} | '
            f'{"yes" if t["met"] else "NO"} |' for t in report['targets']]
  lines += ['', '## Compiled memory per device (GiB, compile-only)', ''] + memory_lines(report)
  lines += ['', '## Notes', '']
  lines += ablation_markdown._previous_notes(previous_path)  # pylint: disable=protected-access
  return '\n'.join(lines) + '\n'


def plot(report: Dict, path: str) -> None:
  """Time-to-accuracy ratio (each clock) and test top-1 against frames."""
  plt = ablation_plots._pyplot()  # pylint: disable=protected-access
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  frames = [t['frames'] for t in report['table']]
  base = [t['baseline_test_top1'] for t in report['table']]
  _errorbar(right, frames, base, 'baseline', 'tab:red')
  for i, (key, label) in enumerate(report['recipes'].items()):
    color = ('tab:blue', 'tab:green', 'tab:purple', 'tab:orange')[i % 4]
    recipes = [t['recipes'][key] for t in report['table']]
    _errorbar(right, frames, [r['test_top1'] for r in recipes], f'recipe {label}', color)
    for clock, style in (('priced', '-'), ('wall', '--')):
      _errorbar(left, frames, [r['ratio'].get(clock) for r in recipes],
                f'{label}, {CLOCK_NAMES[clock]}', color, style)
  left.axhline(ablation_report.TIME_TARGET, color='gray', linestyle=':',
               label=f'{ablation_report.TIME_TARGET}x')
  left.set_ylabel('recipe / baseline time to the accuracy target')
  right.set_ylabel('test top-1 (%)')
  for ax in (left, right):
    ax.set_xscale('log', base=2)
    ax.set_xticks(frames, [str(f) for f in frames])
    ax.set_xlabel('frames per clip')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f'Frames study, mean ± std over seeds {report["seeds"]}')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _errorbar(ax, frames, stats, label, color, style='-') -> None:
  points = [(f, s) for f, s in zip(frames, stats) if s]
  if points:
    ax.errorbar([f for f, _ in points], [s['mean'] for _, s in points],
                yerr=[s['std'] or 0. for _, s in points], label=label, color=color,
                linestyle=style, marker='o', capsize=3)


def rewrite_from_json(out: str, workdir: str) -> Dict:
  """<out>.md and <out>.png again from <out>.json (the notes of <out>.md kept)."""
  with open(out + '.json') as f:
    report = json.load(f)
  print(f'No runs in {workdir}: rewriting the docs from {out}.json.', flush=True)
  for path in write_outputs(report, out)[1:]:
    print(f'Wrote {path}')
  return report


def write_outputs(report: Dict, out: str) -> List[str]:
  """Writes <out>.json, <out>.md and <out>.png; returns their paths."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  paths = [out + '.json', out + '.md', out + '.png']
  with open(paths[0], 'w') as f:  # the same report, rewritten, is the same bytes
    json.dump(report, f, indent=1)
  text = markdown(report, previous_path=paths[1])
  with open(paths[1], 'w') as f:
    f.write(text)
  plot(report, paths[2])
  return paths
