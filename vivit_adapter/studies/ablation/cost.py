"""The study's cost before it starts (--plan_only): the runs it would train, their steps
and an estimate of their training time from seconds per step.

Before the sweep the choices are unknown, so the rows are priced at each route's longest
grid schedule (the grid's upper bound), and a second total prices the worst case of the
grid edges: every baseline and stage-2 choice at an edge, grown MAX_EXTENSIONS times.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation.plan import Plan, Run, Schedule

# Seconds per training step of the 32-px miniature (batch 32, a 2-core CPU under load
# 4-6), measured in one run of the benchmark CLI (docs/results/mini32_time.md): the
# baseline at 32 frames, stage 1 at 8, stage 2 from the feature cache.
STEP_SECONDS = {'baseline': 0.74, 'stage1': 0.116, 'stage2': 0.156}
# Stage 2 at the spatial dial (plan.DIAL_LAYERS), from a cache below the top k of the 4
# spatial layers: an estimate until a benchmark run prices it (`python -m
# vivit_adapter.benchmark ... --modes=baseline,stage2+cached --trainable_spatial_layers=
# 0,1,2`, then --step_seconds): the cached step plus k/4 of the spatial forward and
# backward, taken as all of the baseline's step but the cached step's temporal part.
STEP_SECONDS.update({f'stage2_dial{k}': round(0.156 + k / 4 * (0.74 - 0.156), 3)
                     for k in ablation_plan.DIAL_LAYERS})


def parse_step_seconds(text: str) -> Dict[str, float]:
  """'baseline=0.74,stage1=0.116,stage2=0.156' (any subset) over STEP_SECONDS."""
  out = dict(STEP_SECONDS)
  for item in (i for i in text.split(',') if i.strip()):
    route, _, value = item.partition('=')
    if route.strip() not in STEP_SECONDS or not value:
      raise ValueError(f'--step_seconds: {item!r} is not ROUTE=SECONDS with ROUTE one of '
                       f'{list(STEP_SECONDS)}.')
    out[route.strip()] = float(value)
  return out


def step_seconds(run: Run, plan: Plan, per_step: Dict[str, float]) -> float:
  """A run's seconds per step. Every frozen run (rows I/III too) trains from a cache;
  an end-to-end run's step scales with its frames, as its spatial encoder dominates."""
  if run.frozen:
    return per_step[f'stage2_dial{run.dial}' if run.dial else 'stage2']
  if run.kind == 'stage1':
    return per_step['stage1'] * run.frames / plan.stage1_frames
  return per_step['baseline'] * run.frames / plan.stage2_frames


def longest(plan: Plan) -> Dict[str, Schedule]:
  """Each route's longest grid schedule: the choice assumed before the sweep."""
  return {r: max(plan.grids[r], key=lambda s: (s.steps, s.lr, s.warmup))
          for r in ablation_plan.ROUTES}


def worst_extensions(plan: Plan) -> Tuple[Dict[str, Schedule], Dict[str, List[Schedule]]]:
  """The costliest the grid edges can make the study: (choice, extra sweep schedules).

  Each round adds at most one run per swept axis, the steps' at twice the longest so
  far, the learning rate's at the longest so far; the rows then train at the last.
  """
  choice, extra = longest(plan), {}
  for route in ablation_plan.EXTENDED_ROUTES:
    choice[route], extra[route] = worst_growth(plan.grids[route], choice[route])
  return choice, extra


def worst_growth(grid: Sequence[Schedule], top: Schedule) -> Tuple[Schedule, List[Schedule]]:
  """One route's costliest growth past its grid's edges from `top`, its longest
  schedule: (the schedule its rows then train at, the extra sweep schedules)."""
  factors, extra = ablation_plan.EDGE_FACTORS, []
  swept = {a for a in factors if len({getattr(s, a) for s in grid}) > 1}
  for _ in range(ablation_plan.MAX_EXTENSIONS):
    grown = top
    if 'steps' in swept:
      grown = dataclasses.replace(top, steps=int(top.steps * factors['steps']))
      extra.append(grown)
    if 'lr' in swept:
      extra.append(dataclasses.replace(top, lr=top.lr * factors['lr']))
    top = grown
  return top, extra


def planned_runs(plan: Plan, seeds: Sequence[int], names: Sequence[str],
                 choice: Dict[str, Schedule], extra: Optional[Dict[str, List[Schedule]]] = None
                 ) -> List[Tuple[str, int, Run]]:
  """(phase, seed, run) of every run the study trains once, in the order it trains them:
  the sweep's grids (and `extra` schedules) on seed 0, then the rows on every seed."""
  out, seen = [], set()

  def add(phase, seed, run):
    if (seed, run.key) not in seen:
      seen.add((seed, run.key))
      out.append((phase, seed, run))
  for route in ablation_plan.routes_for(plan, names):
    schedules = [*plan.grids[route], *(extra or {}).get(route, [])]
    for run in ablation_plan.sweep_runs(plan, route, choice, schedules):
      add(f'sweep {route}', ablation_plan.SWEEP_SEED, run)
  rows = [r for r in ablation_plan.make_rows(plan, choice) if r.name in names]
  for seed in seeds:
    for row in rows:
      for run in row.runs:
        add(f'row {row.name}', seed, run)
  return out


def estimate(plan: Plan, seeds: Sequence[int], names: Sequence[str],
             per_step: Dict[str, float]) -> Dict:
  """The runs at the longest grid schedules, with seconds each, and both totals."""
  def priced(choice, extra=None):
    return [{'phase': phase, 'seed': seed, 'key': run.key, 'kind': run.kind,
             'steps': run.schedule.steps,
             'step_s': step_seconds(run, plan, per_step),
             'seconds': run.schedule.steps * step_seconds(run, plan, per_step)}
            for phase, seed, run in planned_runs(plan, seeds, names, choice, extra)]
  runs, worst = priced(longest(plan)), priced(*worst_extensions(plan))
  caches = {(seed, run.cache) for _, seed, run in planned_runs(plan, seeds, names,
                                                               longest(plan)) if run.cache}
  return {'step_seconds': per_step, 'runs': runs, 'caches': len(caches),
          'total_s': sum(r['seconds'] for r in runs),
          'worst_runs': len(worst), 'worst_total_s': sum(r['seconds'] for r in worst)}


def plan_text(est: Dict, plan: Plan) -> str:
  """What --plan_only prints."""
  per_step = ', '.join(f'{k} {v:g}' for k, v in est['step_seconds'].items())
  width = max(len(r['key']) for r in est['runs'])
  lines = ['The runs the study would train (--plan_only: nothing is generated or trained).',
           f'Seconds per step: {per_step} (stage 1 scaled by its frames; --step_seconds to '
           'change them). The rows are priced at each route\'s longest grid schedule; a '
           'seed-0 row run that is a sweep run is trained once.', '',
           f'{"phase":<20} {"seed":>4}  {"run":<{width}} {"steps":>6} {"s/step":>6} '
           f'{"hours":>6}']
  by_kind = {}
  for r in est['runs']:
    lines.append(f'{r["phase"]:<20} {r["seed"]:>4}  {r["key"]:<{width}} {r["steps"]:>6} '
                 f'{r["step_s"]:>6.3f} {r["seconds"] / 3600:>6.2f}')
    by_kind[r['kind']] = by_kind.get(r['kind'], 0.0) + r['seconds']
  kinds = ', '.join(f'{k} {v / 3600:.1f} h' for k, v in by_kind.items())
  lines += ['', f'Total: {len(est["runs"])} runs, {sum(r["steps"] for r in est["runs"])} '
            f'steps, {est["total_s"] / 3600:.1f} h of training ({kinds}).',
            f'Not in it: the extraction of {est["caches"]} feature cache(s), an evaluation '
            f'every {plan.eval_every} steps, compilation, the image checkpoint\'s '
            'pretraining.',
            'If every baseline and stage-2 choice sits at a grid edge '
            f'({ablation_plan.MAX_EXTENSIONS} extensions each, the rows then at the grown '
            f'schedules): up to {est["worst_runs"]} runs, {est["worst_total_s"] / 3600:.1f} h.']
  return '\n'.join(lines)
