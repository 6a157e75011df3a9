r"""Where the saving grows: the baseline against the two-stage recipe at 32, 64 and 128
frames (issue 31), on the synthetic long_events clips (docs/data.md), seed by seed.

  python -m vivit_adapter.frames_study --workdir=runs/frames --out=docs/frames

The ablation's machinery (studies/ablation: its Plan, Runner, sweep and selection rule,
the reuse rule, the row statistics and time to accuracy) with this study's runs:

1. Data: 128-frame clips whose class is the number of one-frame flashes. Every run reads
   a clip of F frames that spans the whole video (stride 128 / F), so more frames see
   more of the flashes, never a longer stretch of time.
2. The sweep at SWEEP_FRAMES (32), on seed 0, chosen on validation (`ablation.plan.
   choose`): the baseline's grid, grown past an edge as the ablation's (x3 the learning
   rate, x2 the steps, at most twice); stage 1's grid at STAGE1_FRAMES (8), chosen by its
   own eval, not grown; stage 2's grid at each dial k (the mlp adapter, from the chosen
   stage 1's cache), as many configurations as the baseline's, grown the same way.
3. Steps at 64 and 128 frames (`grow_steps`), seed 0, each route alike: the 32-frame
   choice's learning rate and warm-up, at its steps S, then 2S; the doubling is kept when
   it raises the final validation top-1 by more than PLATEAU_GAIN points, and then 4S is
   tried (at most MAX_DOUBLINGS doublings). The steps kept are where the validation
   curve, read at the end of each budget, has levelled off. Then the learning rate is
   checked at those steps: the runner-up learning rate of the route's sweep (the best
   other one by validation) is tried too, its steps grown in turn by the same rule
   when it does at least as well, and the better of the two on validation is kept
   (`ablation.plan.choose`), as a learning rate found on 32 frames, whose classes are
   mostly invisible there, need not suit 128 (on seed 0 it collapsed at 64).
4. The rows, on every seed: at each frame count the baseline, and per dial k stage 1
   (one run, shared by every frame count) -> extraction at F frames -> stage 2 at F;
   per BASELINE_STAGE1_DIALS k the same with the baseline's SWEEP_FRAMES run as stage 1.
   A row run that collapses on a seed (`seed_rows`: its training loss ends at ln(classes)
   or above, no better than the class prior: it learned nothing) is rerun on that seed
   at its route's next lower swept learning rate, same steps, whatever the route; the
   collapsed run is shown in the report and not charged. Seed 1's 32-frame baseline at
   9e-3 collapsed so.
5. The report (`frames_report`): test top-1 mean ± std per frame count, time to the
   baseline's accuracy target on every clock the ablation's report has (compute-only
   with --benchmark_json), the recipe's stage 1 counted whole at every frame count and,
   over the frame counts together, once.

Run folders: <workdir>/seed<k>/<run key> and cache_<stage-1 key>[_dial<k>]_<F>f, as the
ablation's (studies/ablation/__init__.py), so that a finished run is reused.
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import ml_collections

from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import run as ablation_run
from vivit_adapter.studies.ablation.plan import Plan, Row, Run, Schedule, Study
from vivit_adapter.train_lib import reporting

# ----------------------------------------------------------------------------------------
# Settings. Sized for ~6-8 CPU-hours on 2 cores for 3 seeds (--plan_only prices them).
# ----------------------------------------------------------------------------------------

FRAMES = (32, 64, 128)
CLIP_FRAMES = 128  # synthetic.LONG_EVENTS_FRAMES (not imported: --help needs no numpy)
SWEEP_FRAMES = 32  # the baseline's (and stage 2's) learning rate is swept here
STAGE1_FRAMES = 8
DIALS = (0, 1)  # config.model.trainable_spatial_layers of the recipe's stage 2
# The recipe with a longer stage 1 (issue 27's next step): stage 1 is the baseline's own
# SWEEP_FRAMES run (the row baseline_32f, counted whole in the recipe's time), frozen;
# extraction and stage 2 at each frame count, at these dials. A stage 1 that sees a
# quarter of the flashes can learn what a flash looks like; one at 8 frames (stride 16)
# sees a sixteenth.
BASELINE_STAGE1_DIALS = (0,)
ADAPTER = 'mlp'  # the adapter the dial study chose (docs/ablation.md)
# The long_events data at 32 px: 4 classes (0-3 flashes), 128 frames per clip.
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 150, 25, 25
RESOLUTION = 32
# The grids (equal budget: the baseline and stage 2 try as many configurations). Stage 1
# at 1800 steps: 4x the ablation's chosen 450, the stage 1 its dial rows start from.
LEARNING_RATES = {'baseline': (1e-3, 3e-3), 'stage1': (1e-3, 3e-3), 'stage2': (1e-3, 3e-3)}
STEPS = {'baseline': (600, 1200), 'stage1': (1800,), 'stage2': (600, 1200)}
WARMUP_STEPS = 50
# Growth of the steps past SWEEP_FRAMES (module docstring, 3).
PLATEAU_GAIN = 1.0  # validation top-1 points a doubling of the steps must add
MAX_DOUBLINGS = 2
EVAL_EVERY = 50
# A run whose last logged training loss is no lower than ln(classes) less this collapsed
# to the class prior, or diverged (module docstring, 4). A run that learns a little ends
# well below it (seed 0's 32-frame baseline at 9e-3: 1.333 against ln 4 = 1.386); a
# collapsed one is at ln 4 to the fourth decimal.
COLLAPSE_TOL = 0.005
SWEEP_SEED = ablation_plan.SWEEP_SEED

# --quick: every piece (sweep, growth, stage 1, caches, rows, report) at no cost. The
# clips are 24 frames (the shortest that holds 3 separate flashes, a multiple of 4 and 8).
QUICK = dict(frames=(4, 8), sweep_frames=4, stage1_frames=2, learning_rates={
    'baseline': (3e-3,), 'stage1': (3e-3,), 'stage2': (3e-3,)},
             steps={'baseline': (2,), 'stage1': (2,), 'stage2': (2,)}, warmup=1,
             eval_every=1, max_doublings=1)
QUICK_DATA = dict(resolution=16, num_frames=24, train_per_class=2, val_per_class=1,
                  test_per_class=1, num_shards=1)


def stage2_route(dial: int, from_baseline: bool = False) -> str:
  """stage2_k<dial>; stage2_b_k<dial> when stage 1 is the sweep's baseline run."""
  return f'stage2_{"b_" if from_baseline else ""}k{dial}'


def from_baseline(route: str) -> bool:
  return route.startswith('stage2_b_')


@dataclasses.dataclass(frozen=True)
class FramesPlan:
  """The study's frame counts and growth rule around the ablation's Plan (whose
  stage2_frames is the sweep's frame count)."""
  base: Plan
  frames: Tuple[int, ...]
  dials: Tuple[int, ...]
  max_doublings: int
  clip_frames: int  # the data's clip length: a run of F frames reads at stride clip / F
  baseline_dials: Tuple[int, ...] = ()  # recipes whose stage 1 is the sweep's baseline

  @property
  def recipes(self) -> Tuple[Tuple[str, str], ...]:
    """(key, stage-2 route) of every recipe: key 'k' for stage 1 at stage1_frames,
    'b<k>' for stage 1 = the baseline at the sweep's frame count."""
    return (tuple((str(k), stage2_route(k)) for k in self.dials) +
            tuple((f'b{k}', stage2_route(k, True)) for k in self.baseline_dials))

  @property
  def routes(self) -> Tuple[str, ...]:
    return ('baseline', 'stage1', *(route for _, route in self.recipes))

  def stride(self, frames: int) -> int:
    return max(1, self.clip_frames // frames)


def synthetic_data(quick: bool) -> Dict:
  """Keyword arguments of data_pipelines.synthetic.generate for the study's data."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthetic
  from vivit_adapter.studies import demo
  # pylint: enable=g-import-not-at-top
  common = dict(classes=list(synthetic.EVENT_NAMES), scene=demo.DEMO_SCENE)
  if quick:
    return dict(QUICK_DATA, **common)
  return dict(common, resolution=RESOLUTION, num_frames=synthetic.LONG_EVENTS_FRAMES,
              train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
              test_per_class=TEST_PER_CLASS)


def make_plan(quick: bool, adapter_width: int, frames: Sequence[int] = (),
              dials: Sequence[int] = DIALS, clip_frames: int = 0,
              baseline_dials: Sequence[int] = BASELINE_STAGE1_DIALS) -> FramesPlan:
  """The plan from the constants above (QUICK's with quick); `frames` () = FRAMES."""
  s = QUICK if quick else dict(
      frames=FRAMES, sweep_frames=SWEEP_FRAMES, stage1_frames=STAGE1_FRAMES,
      learning_rates=LEARNING_RATES, steps=STEPS, warmup=WARMUP_STEPS,
      eval_every=EVAL_EVERY, max_doublings=MAX_DOUBLINGS)
  frames = tuple(sorted(frames or s['frames']))
  if s['sweep_frames'] not in frames:
    raise ValueError(f'--frames={",".join(map(str, frames))}: the sweep runs at '
                     f'{s["sweep_frames"]} frames, so it must be one of them.')
  clip_frames = clip_frames or (QUICK_DATA['num_frames'] if quick else CLIP_FRAMES)
  uneven = [f for f in (*frames, s['stage1_frames']) if clip_frames % f]
  if uneven:
    raise ValueError(f'--frames: {uneven} do not divide the {clip_frames}-frame clip, so '
                     'a clip of that many frames could not span it at a whole stride.')
  unknown = [k for k in (*dials, *baseline_dials) if k not in (0, *ablation_plan.DIAL_LAYERS)]
  if unknown:
    raise ValueError(f'--dials / --baseline_dials: {unknown} not among the miniature\'s '
                     'dial points '
                     f'{[0, *ablation_plan.DIAL_LAYERS]}.')

  def grid(route):
    return tuple(Schedule(lr, steps, s['warmup']) for lr in s['learning_rates'][route]
                 for steps in s['steps'][route])
  grids = {'baseline': grid('baseline'), 'stage1': grid('stage1')}
  grids.update({stage2_route(k): grid('stage2') for k in dials})
  grids.update({stage2_route(k, True): grid('stage2') for k in baseline_dials})
  if len(grids['baseline']) != len(grid('stage2')):
    raise ValueError('Unequal tuning budget: LEARNING_RATES and STEPS in '
                     'studies/frames.py give the baseline and stage 2 grids of different '
                     'sizes; give both as many configurations.')
  base = Plan(stage2_frames=s['sweep_frames'], stage1_frames=s['stage1_frames'],
              init_frames=(s['stage1_frames'],), grids=grids, adapter_width=adapter_width,
              adapter_widths=(), views=1, eval_every=s['eval_every'], quick=quick)
  return FramesPlan(base, frames, tuple(dials), s['max_doublings'], clip_frames,
                    tuple(baseline_dials))


# ----------------------------------------------------------------------------------------
# Runs: the ablation's, with a feature cache per frame count.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FramesRun(Run):
  """A stage 2 whose cache is named by its frame count too: the ablation's stage 2 has
  one frame count, this study's reads a cache per frame count of the same stage 1."""

  @property
  def cache(self) -> str:
    name = super().cache
    return f'{name}_{self.frames}f' if name else ''


def stage1_run(plan: FramesPlan, choice: Dict[str, Schedule]) -> Run:
  return Run('stage1', plan.base.stage1_frames, choice['stage1'])


def route_run(plan: FramesPlan, route: str, frames: int, schedule: Schedule,
              choice: Dict[str, Schedule]) -> Run:
  """The run of `route` at `frames` with `schedule` (stage 2 from the chosen stage 1)."""
  if route == 'baseline':
    return Run('baseline', frames, schedule)
  if route == 'stage1':
    return Run('stage1', frames, schedule)
  init = (Run('baseline', plan.base.stage2_frames, choice['baseline']) if from_baseline(route)
          else stage1_run(plan, choice))
  return FramesRun('stage2', frames, schedule, ADAPTER, init=init,
                   dial=int(route.rsplit('_k', 1)[1]))  # stage2_route's k


def row_name(route: str, frames: int) -> str:
  return f'{"baseline" if route == "baseline" else "recipe_" + route[len("stage2_"):]}_{frames}f'


def make_rows(plan: FramesPlan, choice: Dict[str, Schedule],
              schedules: Dict[int, Dict[str, Schedule]]) -> List[Row]:
  """Per frame count, the baseline and the recipe at each dial (stage 1 -> stage 2)."""
  rows = []
  for frames in plan.frames:
    chosen = schedules.get(frames, {})
    for route in (r for r in plan.routes if r != 'stage1' and r in chosen):
      run = route_run(plan, route, frames, chosen[route], choice)
      if route == 'baseline':
        rows.append(Row(row_name(route, frames), f'{frames}f', f'end to end at {frames} '
                        'frames from the image checkpoint', (run,)))
      else:
        stage1 = (f'stage 1 = the baseline at {plan.base.stage2_frames} frames (its row\'s '
                  'run)' if from_baseline(route) else
                  f'stage 1 at {plan.base.stage1_frames} frames')
        rows.append(Row(row_name(route, frames), f'{frames}f', f'{stage1}, extraction at '
                        f'{frames}, stage 2 ({ADAPTER} adapter, top {run.dial} spatial '
                        'layers trained)', (run.init, run)))
  return rows


class FramesRunner(ablation_run.Runner):
  """The ablation's Runner; every run reads a clip spanning the whole video, and a cache
  stores as many views as the stride has phases."""

  def __init__(self, plan: FramesPlan, study: Study, train: bool):
    super().__init__(plan.base, study, train)
    self.frames_plan = plan

  def run_config(self, run: Run, seed: int) -> ml_collections.ConfigDict:
    config = super().run_config(run, seed)
    config.dataset.stride = self.frames_plan.stride(run.frames)
    config.experiment_name = f'frames_{run.key}_seed{seed}'
    return config

  def cache_config(self, run: Run, seed: int) -> ml_collections.ConfigDict:
    # The run's own config: the mlp adapter reads the pooled vector (k = 0) or the tokens
    # below the dial, so that is all the cache stores.
    return self.run_config(run, seed)

  def final_train_loss(self, run: Run, seed: int) -> Optional[float]:
    """The last logged training loss of a finished run (None if none)."""
    rows = reporting.History(self.study.run_dir(seed, run.key)).rows('train')
    return rows[-1]['loss'] if rows else None

  def views(self, run: Run) -> int:
    # A clip of F frames at stride S starts at one of S frames (reader.random_clip_
    # indices): S views give stage 2 about as many distinct training clips as the
    # baseline sees, for the frames of one 128-frame view per clip.
    return self.frames_plan.stride(run.frames)


# ----------------------------------------------------------------------------------------
# The sweep at SWEEP_FRAMES, then the steps grown at the other frame counts.
# ----------------------------------------------------------------------------------------

def run_sweep(runner: FramesRunner) -> Tuple[Dict, Dict[str, Schedule]]:
  """Seed 0's grids at the sweep's frame count; returns (tried, choice) as
  `ablation.run.run_sweep` does."""
  plan, tried, choice = runner.frames_plan, {}, {}
  for route in plan.routes:
    if route.startswith('stage2') and (
        'baseline' if from_baseline(route) else 'stage1') not in choice:
      continue  # its stage 1 is not chosen yet

    def make_runs(schedules, route=route):
      return [route_run(plan, route, plan.base.stage2_frames if route != 'stage1'
                        else plan.base.stage1_frames, s, choice) for s in schedules]
    tried[route], chosen = ablation_run.sweep_route(
        runner, route, choice, make_runs=make_runs, extended=route != 'stage1')
    if chosen is not None:
      choice[route] = chosen
      print(f'Sweep {route}: chose {chosen.tag} (validation top-1).', flush=True)
  return tried, choice


def runner_up_lr(tried: Sequence[Tuple[Run, Optional[Dict]]],
                 chosen: Schedule) -> Optional[float]:
  """The learning rate, other than the chosen one, of the route's best other sweep run
  on validation (ties as `ablation.plan.choose`); None when the sweep tried one."""
  others = [(r.schedule, s['eval']['top1']) for r, s in tried
            if s is not None and r.schedule.lr != chosen.lr]
  return ablation_plan.choose(others).lr if others else None


def _doubled(runner: FramesRunner, route: str, frames: int, start: Schedule,
             choice: Dict[str, Schedule], tried: List,
             floor: Optional[float] = None) -> Optional[Schedule]:
  """`start`, its steps doubled while a doubling raises the final validation top-1 by
  more than PLATEAU_GAIN (at most max_doublings times); not doubled at all when `start`
  scores below `floor`. Every run is appended to `tried`; None while a run is missing."""
  plan, kept = runner.frames_plan, start
  run = route_run(plan, route, frames, kept, choice)
  tried.append((run, runner.summary(run, SWEEP_SEED)))
  if tried[-1][1] is None:
    return None
  if floor is not None and tried[-1][1]['eval']['top1'] < floor:
    return kept
  for _ in range(plan.max_doublings):
    longer = dataclasses.replace(kept, steps=kept.steps * 2)
    run = route_run(plan, route, frames, longer, choice)
    tried.append((run, runner.summary(run, SWEEP_SEED)))
    if tried[-1][1] is None:
      return None
    # Rounded: top-1 is a fraction of whole clips, so a gain of exactly PLATEAU_GAIN
    # must not pass by a float's last bit.
    gain = round(100 * (tried[-1][1]['eval']['top1'] - tried[-2][1]['eval']['top1']), 6)
    if gain <= PLATEAU_GAIN:
      break
    kept = longer
  return kept


def grow_steps(runner: FramesRunner, route: str, frames: int,
               choice: Dict[str, Schedule],
               swept: Sequence[Tuple[Run, Optional[Dict]]] = ()
               ) -> Tuple[Optional[Schedule], List]:
  """The route's schedule at `frames` (module docstring, 3): its steps grown, then its
  learning rate checked against the sweep's (`swept`) runner-up at those steps, whose
  steps are grown in turn when it is at least as good; returns (schedule or None while
  a run is missing, [(Run, summary)] tried)."""
  plan, tried = runner.frames_plan, []
  kept = _doubled(runner, route, frames, choice[route], choice, tried)
  other_lr = runner_up_lr(swept, choice[route])
  if kept is None or other_lr is None:
    return kept, tried

  def top1(schedule):
    key = route_run(plan, route, frames, schedule, choice).key
    return next(s['eval']['top1'] for r, s in tried if r.key == key)
  other = _doubled(runner, route, frames, dataclasses.replace(kept, lr=other_lr), choice,
                   tried, floor=top1(kept))
  if other is None:
    return None, tried
  return ablation_plan.choose([(kept, top1(kept)), (other, top1(other))]), tried


def frame_schedules(runner: FramesRunner, choice: Dict[str, Schedule],
                    swept: Optional[Dict[str, List]] = None):
  """{frames: {route: schedule}} and {frames: {route: tried}}: the sweep's choice at its
  frame count, grown steps at the others."""
  plan, schedules, grown = runner.frames_plan, {}, {}
  for frames in plan.frames:
    schedules[frames], grown[frames] = {}, {}
    for route in (r for r in plan.routes if r != 'stage1' and r in choice):
      if frames == plan.base.stage2_frames:
        schedules[frames][route] = choice[route]
        continue
      kept, tried = grow_steps(runner, route, frames, choice, (swept or {}).get(route, ()))
      grown[frames][route] = tried
      if kept is not None:
        schedules[frames][route] = kept
        print(f'Steps at {frames} frames, {route}: {kept.tag}.', flush=True)
  return schedules, grown


# ----------------------------------------------------------------------------------------
# The rows of one seed: a collapsed run rerun at a lower learning rate.
# ----------------------------------------------------------------------------------------

def lower_lr(tried: Sequence[Tuple[Run, Optional[Dict]]], lr: float) -> Optional[float]:
  """The highest learning rate of the route's sweep (`tried`) below `lr`; None if none."""
  lower = [r.schedule.lr for r, _ in tried if r.schedule.lr < lr]
  return max(lower) if lower else None


def seed_rows(runner: FramesRunner, choice: Dict[str, Schedule],
              schedules: Dict[int, Dict[str, Schedule]], tried: Dict[str, List],
              seed: int, num_classes: int) -> Tuple[List[Row], List[Dict]]:
  """The rows on `seed` (`make_rows`), each of their runs trained (or read) here in
  order, stage 1s first. A run whose last training loss is no lower than
  ln(num_classes) - COLLAPSE_TOL (no better than the class prior) is replaced, on this
  seed only, by the same steps at its route's next lower swept learning rate
  (`lower_lr`; again while that collapses too), and the rows use it, a stage 2 from
  that stage 1 included. Returns (rows, restarts): one
  {seed, route, frames, collapsed (key), loss, rerun (key)} per replaced run."""
  plan, restarts = runner.frames_plan, []
  prior = math.log(num_classes)

  def settle(route, frames, schedule, inits):
    while True:
      run = route_run(plan, route, frames, schedule, inits)
      if runner.summary(run, seed) is None:
        return schedule
      loss = runner.final_train_loss(run, seed)
      lr = lower_lr(tried.get(route, ()), schedule.lr)
      if loss is None or loss < prior - COLLAPSE_TOL or lr is None:
        return schedule
      schedule = dataclasses.replace(schedule, lr=lr)
      restarts.append({'seed': seed, 'route': route, 'frames': frames, 'collapsed': run.key,
                       'loss': loss, 'rerun': route_run(plan, route, frames, schedule,
                                                        inits).key})
      print(f'  {run.key} (seed {seed}) collapsed (training loss {loss:.4f}, ln '
            f'{num_classes} = {prior:.4f}): rerun at lr {lr:g}.', flush=True)

  inits = dict(choice)
  for route, frames, used in (('stage1', plan.base.stage1_frames, plan.dials),
                              ('baseline', plan.base.stage2_frames, True)):
    if route in choice and used:
      inits[route] = settle(route, frames, choice[route], choice)
  settled = {}
  for frames, by_route in schedules.items():
    settled[frames] = {}
    for route, schedule in by_route.items():
      settled[frames][route] = (inits[route] if route == 'baseline' and
                                frames == plan.base.stage2_frames else
                                settle(route, frames, schedule, inits))
  return make_rows(plan, inits, settled), restarts
