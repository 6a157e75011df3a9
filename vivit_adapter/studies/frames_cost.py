"""The frames study's cost before it starts (--plan_only): its runs, their steps and an
estimate of their training time (the learning-rate check at the kept steps included).

Before the sweep the choices are unknown, so the study is priced twice: typical (each
route at its grid's longest schedule, the first doubling of the steps at 64 and 128
frames tried and not kept) and worst (every baseline and stage-2 choice at a grid edge,
grown MAX_EXTENSIONS times, and every doubling kept, the rows then at the longest).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from vivit_adapter.studies import frames as frames_study
from vivit_adapter.studies.ablation import cost as ablation_cost
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation.plan import Run, Schedule

# Seconds per training step by frame count, batch 32, the 32-px miniature, measured on
# this project's 2-core CPU machine (load 2.5-3.5: another study beside it) in one run
# of the benchmark CLI, 5 timed steps each (docs/results/frames_plan_prices.{md,json};
# it has no attention case, so it cannot be the report's --benchmark_json): the
# baseline (stage 1 is its step at 8 frames), stage 2 from the cache with the mlp
# adapter at k = 0 and 1. k = 2 is not measured: priced as k = 1 plus another
# (k = 1 - k = 0), an estimate. A frame count not in a table is priced from the nearest
# one in proportion to its frames.
STEP_SECONDS = {
    'baseline': {8: 0.089, 32: 0.361, 64: 0.828, 128: 1.708},
    'stage2_k0': {8: 0.003, 32: 0.007, 64: 0.018, 128: 0.104},
    'stage2_k1': {8: 0.019, 32: 0.084, 64: 0.203, 128: 0.489},
    'stage2_k2': {8: 0.035, 32: 0.161, 64: 0.388, 128: 0.874}}
# Seconds per clip-view of the extraction at 32 frames (the frozen forward pass, about a
# third of the baseline's step per clip; 0.002-0.006 s in frames_plan_prices), priced in
# proportion to the frames.
EXTRACT_SECONDS = 0.004


def parse_step_seconds(text: str) -> Dict[str, Dict[int, float]]:
  """'baseline=0.36,stage2_k0=0.01' (any subset): a route's seconds at 32 frames; its
  other frame counts scale with it."""
  out = {route: dict(table) for route, table in STEP_SECONDS.items()}
  for item in (i for i in text.split(',') if i.strip()):
    route, _, value = item.partition('=')
    route = route.strip()
    if route not in STEP_SECONDS or not value:
      raise ValueError(f'--step_seconds: {item!r} is not ROUTE=SECONDS with ROUTE one of '
                       f'{list(STEP_SECONDS)}.')
    factor = float(value) / STEP_SECONDS[route][32]
    out[route] = {f: v * factor for f, v in STEP_SECONDS[route].items()}
  return out


def price(table: Dict[int, float], frames: int) -> float:
  """Seconds per step at `frames` from a {frames: seconds} table."""
  nearest = min(table, key=lambda f: (abs(f - frames), f))
  return table[nearest] * frames / nearest


def step_seconds(run: Run, plan, per_step: Dict[str, Dict[int, float]]) -> float:
  """A run's seconds per step (stage 1 is the baseline's step at its frames)."""
  route = ('baseline' if run.kind in ('baseline', 'stage1')
           else frames_study.stage2_route(run.dial))
  return price(per_step[route], run.frames)


def _longest(grid: Sequence[Schedule]) -> Schedule:
  return max(grid, key=lambda s: (s.steps, s.lr, s.warmup))


def _choices(plan, worst: bool) -> Tuple[Dict[str, Schedule], Dict[str, List[Schedule]]]:
  """(choice per route, extra sweep schedules per route) as the module docstring says."""
  choice = {r: _longest(plan.base.grids[r]) for r in plan.routes}
  extra = {r: [] for r in plan.routes}
  if not worst:
    return choice, extra
  for route in (r for r in plan.routes if r != 'stage1'):
    choice[route], extra[route] = ablation_cost.worst_growth(plan.base.grids[route],
                                                             choice[route])
  return choice, extra


def planned_runs(plan, seeds: Sequence[int], worst: bool = False
                 ) -> List[Tuple[str, int, Run]]:
  """(phase, seed, run) of every run the study trains once, in the order it trains them."""
  choice, extra = _choices(plan, worst)
  out, seen = [], set()

  def add(phase, seed, run):
    if (seed, run.key) not in seen:
      seen.add((seed, run.key))
      out.append((phase, seed, run))
  sweep = frames_study.SWEEP_SEED
  for route in plan.routes:
    frames = plan.base.stage1_frames if route == 'stage1' else plan.base.stage2_frames
    for s in (*plan.base.grids[route], *extra[route]):
      add(f'sweep {route}', sweep, frames_study.route_run(plan, route, frames, s, choice))
  doublings = plan.max_doublings if worst else 1
  schedules = {}
  for frames in plan.frames:
    for route in (r for r in plan.routes if r != 'stage1'):
      s = choice[route]
      if frames != plan.base.stage2_frames:
        for d in range(doublings + 1):
          s = dataclasses.replace(choice[route], steps=choice[route].steps * 2 ** d)
          add(f'steps {frames}f {route}', sweep,
              frames_study.route_run(plan, route, frames, s, choice))
        if not worst:
          s = choice[route]  # typical: the doubling is tried and not kept
        # The learning-rate check at the kept steps (frames.grow_steps): the runner-up
        # is unknown before the sweep, so the grid's highest other learning rate;
        # typical: it loses, worst: it wins and its steps double again.
        others = sorted({g.lr for g in plan.base.grids[route]} - {s.lr})
        for d in range(doublings + 1 if worst else 1) if others else ():
          check = dataclasses.replace(s, lr=others[-1], steps=s.steps * 2 ** d)
          add(f'lr check {frames}f {route}', sweep,
              frames_study.route_run(plan, route, frames, check, choice))
      schedules.setdefault(frames, {})[route] = s
  for seed in seeds:
    for row in frames_study.make_rows(plan, choice, schedules):
      for run in row.runs:
        add(f'row {row.name}', seed, run)
  return out


def estimate(plan, seeds: Sequence[int], per_step: Dict[str, float],
             clips: Optional[int] = None) -> Dict:
  """The planned runs with seconds each, both totals, and the extraction's estimate."""
  def priced(worst):
    return [{'phase': phase, 'seed': seed, 'key': run.key, 'kind': run.kind,
             'frames': run.frames, 'steps': run.schedule.steps,
             'step_s': step_seconds(run, plan, per_step),
             'seconds': run.schedule.steps * step_seconds(run, plan, per_step)}
            for phase, seed, run in planned_runs(plan, seeds, worst)]
  runs, worst = priced(False), priced(True)
  caches = {(seed, run.cache, run.frames) for _, seed, run in planned_runs(plan, seeds)
            if run.cache}
  # A cache at F frames stores stride views per training clip, 1 per other clip: the
  # frames of one whole clip either way, priced in proportion to the frames.
  clips = clips or 0
  extraction = sum(clips * plan.stride(f) * EXTRACT_SECONDS * f / plan.base.stage2_frames
                   for _, _, f in caches)
  return {'step_seconds': per_step, 'runs': runs, 'caches': len(caches),
          'extraction_s': extraction, 'total_s': sum(r['seconds'] for r in runs),
          'worst_runs': len(worst), 'worst_total_s': sum(r['seconds'] for r in worst)}


def plan_text(est: Dict, plan) -> str:
  """What --plan_only prints."""
  per_step = '; '.join(f'{k} ' + ', '.join(f'{f}f {v:.3g}' for f, v in sorted(t.items()))
                       for k, t in est['step_seconds'].items())
  width = max(len(r['key']) for r in est['runs'])
  lines = ['The runs the frames study would train (--plan_only: nothing is generated or '
           'trained).',
           f'Seconds per step: {per_step} (stage 1: the baseline\'s at its frames; '
           '--step_seconds or --benchmark_json to change them). Typical: every route at '
           'its grid\'s longest schedule, the first doubling of the steps tried and not '
           'kept.', '',
           f'{"phase":<24} {"seed":>4}  {"run":<{width}} {"steps":>6} {"s/step":>6} '
           f'{"hours":>6}']
  by_kind = {}
  for r in est['runs']:
    lines.append(f'{r["phase"]:<24} {r["seed"]:>4}  {r["key"]:<{width}} {r["steps"]:>6} '
                 f'{r["step_s"]:>6.3f} {r["seconds"] / 3600:>6.2f}')
    kind = f'{r["kind"]} {r["frames"]}f'
    by_kind[kind] = by_kind.get(kind, 0.0) + r['seconds']
  kinds = ', '.join(f'{k} {v / 3600:.2f} h' for k, v in by_kind.items())
  lines += ['', f'Total: {len(est["runs"])} runs, {sum(r["steps"] for r in est["runs"])} '
            f'steps, {est["total_s"] / 3600:.1f} h of training ({kinds}).',
            f'Extraction of {est["caches"]} feature cache(s): about '
            f'{est["extraction_s"] / 3600:.2f} h. Not in it: an evaluation every '
            f'{plan.base.eval_every} steps, compilation, the data and the image '
            'checkpoint.',
            f'Worst case (every choice at a grid edge, grown {ablation_plan.MAX_EXTENSIONS} '
            f'times, every doubling kept): {est["worst_runs"]} runs, '
            f'{est["worst_total_s"] / 3600:.1f} h.']
  return '\n'.join(lines)


def benchmark_step_seconds(path: str, plan, per_step: Dict[str, Dict[int, float]]
                           ) -> Dict[str, Dict[int, float]]:
  """The step prices of a benchmark's OUT.json at every frame count of the plan (the
  cases the report's compute-only clock reads); what it did not time keeps `per_step`'s."""
  from vivit_adapter.studies import frames_report  # pylint: disable=g-import-not-at-top
  out = {route: dict(table) for route, table in per_step.items()}
  for frames in plan.frames:
    prices = frames_report.prices_at(path, plan, frames)
    if prices is None:
      raise ValueError(f'--benchmark_json={path}: no baseline at {plan.base.stage1_frames} '
                       f'and {frames} frames and stage2+cached (attention) at {frames}; '
                       'run the benchmark command docs/frames.md names.')
    out['baseline'].update({frames: prices['baseline'],
                            plan.base.stage1_frames: prices['stage1']})
    out['stage2_k0'][frames] = prices['stage2'][frames_study.ADAPTER]
    for k, dial in prices['dial'].items():
      out.setdefault(frames_study.stage2_route(k), {})[frames] = dial['step']
  return out
