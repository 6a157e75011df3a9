"""The ablation's plan: its settings, the sweep grids, the rows and each run's config.

Two phases (docs/design.md §2c). The sweep, on seed 0, tries every schedule (learning
rate x steps x warm-up) of a grid for the baseline, for stage 1 (chosen by its own
few-frame eval top-1) and for stage 2 (from the chosen stage 1's feature cache, with the
attention adapter), and chooses on the validation split (`choose`); the baseline's and
stage 2's grids grow past an edge their choice sits on (`extend`). The rows then train
with the chosen schedules on every seed; seed 0's sweep runs of the chosen schedules
are those rows' seed-0 runs (same key, same config: reused, not retrained).

Every frozen run (rows I/III, every stage 2) trains from a feature cache: the frozen
part run once per clip (`studies.runs.ensure_cache`), its time part of the row's.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import ml_collections

from vivit_adapter import recipes
from vivit_adapter.studies import experiment_configs

# ----------------------------------------------------------------------------------------
# The study's settings (a pilot sets the final values; docs/ablation.md records them).
# ----------------------------------------------------------------------------------------

# The miniature (docs/ablation.md, Notes): the synthetic recipe's ViViT at
# 32x32 px (experiments/synthetic_*.py), whose compute-only step ratios match
# ViViT-B/16x2's at 224 px (stage 2 ~0.30x of the end-to-end step, measured by the
# benchmark CLI) at a sixth of the 64-px miniature's (experiments/mini64_*.py) cost per
# clip; at 64 px stage 2 was 0.435x, further from ViViT-B. Synthetic data: clips per
# class and split, 32-px frames, 64-frame clips.
TRAIN_PER_CLASS = 150
VAL_PER_CLASS = 20
TEST_PER_CLASS = 20
RESOLUTION = 32
CLIP_FRAMES = 64
# Frames: the baseline and every stage 2; row V's stage 1; the init-frames sub-table.
STAGE2_FRAMES = 32
STAGE1_FRAMES = 8
INIT_FRAMES = (2, 4, 8)
# The sweep's grids, per route: every learning rate x steps x warm-up is one run.
# Equal budget: the baseline and stage 2 try as many configurations (make_plan checks).
# Stage 2's steps are twice the baseline's: from the cache a stage-2 step costs a small
# fraction of an end-to-end one, and an independent measurement (the issue's) found
# stage 2 needs more steps than the baseline, not fewer.
LEARNING_RATES = {'baseline': (1e-3, 3e-3), 'stage1': (1e-3, 3e-3), 'stage2': (1e-3, 3e-3)}
STEPS = {'baseline': (300, 600), 'stage1': (450,), 'stage2': (600, 1200)}
WARMUP_STEPS = {'baseline': (50,), 'stage1': (50,), 'stage2': (50,)}
# Grid edges: when a route's choice sits on an edge of a swept axis (one with two or
# more values in its grid), that axis grows one step past the edge around the choice
# (x or / the factor) and the route chooses again, at most MAX_EXTENSIONS times, so that
# neither the baseline nor stage 2 is under-tuned by where its grid happened to stop.
# Stage 1 is not grown: its own few-frame eval says what suits stage 1, not what the
# final model needs, and growing it would only lengthen the two-stage recipe.
EDGE_FACTORS = {'lr': 3.0, 'steps': 2.0}
MAX_EXTENSIONS = 2
SWEEP_SEED = 0  # the sweep's runs are the chosen schedules' seed-0 runs
# Steps between evaluations: the points of the time-to-accuracy curves.
EVAL_EVERY = 50
# Training views stored per clip in a feature cache. One: the miniature's training clip
# is deterministic (no scale jitter, no flip, no colour ops, and 32 frames at stride 2
# cover the whole 64-frame clip), so every further view would repeat the first.
CACHE_VIEWS = 1
# The adapter study: widths (the recipe's is among them: its rows are III and V) and
# multiples of the chosen stage-2 learning rate for row III.
ADAPTER_WIDTHS = (16, 32, 64)
LR_FACTORS = (1 / 3, 3.0)
ADAPTERS = ('attention', 'mlp', 'none')
# What limits V (docs/ablation.md, Notes): stage 1 trained this many times the chosen
# stage-1 steps (row V_long_stage1), and stage 2 on the baseline's own spatial encoder
# (row V_from_baseline: a ceiling for any stage 1, not a recipe).
LONG_STAGE1_FACTOR = 3
# Rows V_stage1_x<F>_mlp: stage 1 F times the chosen steps, stage 2 with the mlp adapter.
# 4: sized as the longest stage 1 whose whole recipe fit the time target against the
# 1200-step baseline at the prices of docs/results/mini32_time.json (stage 1 0.157x the
# baseline's step); at the quieter mini32_time_adapters.json (0.233x) it alone costs
# ~0.35x of that baseline. 6: sized against the 2400-step baseline the second grid
# extension chose, from a first reading of seed 0's curve (level at ~1750 steps, so 0.45x
# left ~3000 stage-1 steps at 0.233x). As measured (docs/ablation.md), the baseline
# reaches its level at 1200 / 1550 / 1450 steps, and a 6x stage 1 fits 0.45x of that on
# seed 1 only; it misses the accuracy on every seed either way.
MLP_STAGE1_FACTORS = (4, 6)
# Row V_stage1_4f_long_mlp: stage 1 at 4 frames (half the price of an 8-frame step; V did
# not depend on stage 1's frames in docs/ablation.md) for this many times the chosen
# steps, so that its spatial encoder trains longer for the price of a 3x 8-frame stage 1,
# then stage 2 with the mlp adapter.
FEW_FRAMES_STAGE1 = (4, 6)  # (frames, steps factor)
# The spatial dial (docs/design.md §2d): rows with the top k of the miniature's 4 spatial
# layers trained in stage 2, from a cache taken below them. With the recipe the last
# study chose (V_stage1_x4_mlp: stage 1 DIAL_STAGE1_FACTOR x longer, the mlp adapter),
# and without stage 1 (row I's image checkpoint as the encoder, temporal random). Each
# k is its own route: stage 2's grid, swept on validation from that stage 1's k-cache
# (and grown past an edge, as stage 2's), and the dial without stage 1 trains with it.
DIAL_LAYERS = (1, 2)
# Rows early_<name>_mlp (issue 27's next step): stage 1 is the baseline itself, end to
# end at the stage-2 frame count but stopped at a fraction of the chosen steps (a whole
# run, its cosine schedule ending there), then frozen, cached and followed by the mlp
# adapter's stage 2. The dial study found the cap below any dial (V_from_baseline: the
# 32-frame encoder frozen is enough); these ask how short that end-to-end phase may be.
# A quarter and a half: for the chosen 2400 steps the seed-0 sweep's 600 and 1200.
EARLY_BASELINE_FRACTIONS = {'quarter': 4, 'half': 2}  # name: divisor of the steps
DIAL_STAGE1_FACTOR = MLP_STAGE1_FACTORS[0]
DIAL_ADAPTER = 'mlp'
# The order the rows train in, phase by phase, each on every seed: the rows the targets
# read (baseline, I, III, V), then the sub-tables, then what limits V, then the dial,
# then the adapter study.
PHASES = (('main',), ('init_frames', 'adapter'), ('limits',), ('dial',), ('adapter_study',))

# --quick: every row kind, the sweep and the caches, at no cost.
QUICK = dict(stage2_frames=8, stage1_frames=4, init_frames=(2, 4),
             learning_rates={'baseline': (1e-3, 3e-3), 'stage1': (3e-3,),
                             'stage2': (1e-3, 3e-3)},
             steps={'baseline': (2,), 'stage1': (2,), 'stage2': (2,)},
             warmup_steps={'baseline': (1,), 'stage1': (1,), 'stage2': (1,)},
             adapter_widths=(4, 8, 16), eval_every=1)
QUICK_DATA = dict(resolution=16, num_frames=16, train_per_class=3, val_per_class=1,
                  test_per_class=1, num_shards=1)

def dial_route(k: int) -> str:
  """The sweep route of stage 2 at dial k."""
  return f'dial{k}'


DIAL_ROUTES = tuple(dial_route(k) for k in DIAL_LAYERS)
ROUTES = ('baseline', 'stage1', 'stage2', *DIAL_ROUTES)
EXTENDED_ROUTES = ('baseline', 'stage2', *DIAL_ROUTES)
# Run kind -> the experiment (experiments/<name>.py) its config starts from.
EXPERIMENTS = {'baseline': 'synthetic_baseline', 'stage1': 'synthetic_stage1',
               'stage2': 'synthetic_stage2', 'frozen_image': 'synthetic_stage2'}
IMAGE_CACHE = 'image'  # the cache of rows I/III: the image checkpoint's frozen part


def synthetic_data(quick: bool) -> Dict:
  """Keyword arguments of data_pipelines.synthetic.generate for the study's data."""
  from vivit_adapter.studies import demo  # pylint: disable=g-import-not-at-top
  if quick:
    return dict(QUICK_DATA, classes=list(demo.DEMO_CLASSES[:6]), scene=demo.DEMO_SCENE)
  return dict(resolution=RESOLUTION, num_frames=CLIP_FRAMES, classes=list(demo.DEMO_CLASSES),
              scene=demo.DEMO_SCENE, train_per_class=TRAIN_PER_CLASS,
              val_per_class=VAL_PER_CLASS, test_per_class=TEST_PER_CLASS)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """What the sweep tunes: peak learning rate, training steps, linear warm-up steps."""
  lr: float
  steps: int
  warmup: int

  @property
  def tag(self) -> str:
    return f'lr{self.lr:.3g}_s{self.steps}_w{self.warmup}'


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run; its key is its folder under <workdir>/seed<k>/."""
  kind: str  # 'baseline', 'stage1', 'stage2' or 'frozen_image' (rows I/III)
  frames: int
  schedule: Schedule
  adapter: str = 'none'
  adapter_width: int = 0  # 0: the recipe's
  init: Optional['Run'] = None  # stage2: the stage-1 run it starts from
  dial: int = 0  # frozen runs: config.model.trainable_spatial_layers

  @property
  def frozen(self) -> bool:
    return self.kind in ('stage2', 'frozen_image')

  @property
  def cache(self) -> str:
    """The feature cache a frozen run trains from ('' for an end-to-end run)."""
    if not self.frozen:
      return ''
    name = IMAGE_CACHE if self.kind == 'frozen_image' else self.init.key
    return f'{name}_dial{self.dial}' if self.dial else name  # taken below the dial

  @property
  def key(self) -> str:
    if not self.frozen:
      return f'{self.kind}_{self.frames}f_{self.schedule.tag}'
    width = f'_w{self.adapter_width}' if self.adapter_width else ''
    return f'{self.cache}__stage2_{self.adapter}{width}_{self.schedule.tag}'


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  table: str  # a key of report.TABLES
  description: str
  runs: Tuple[Run, ...]  # in the order they must run; the last one is evaluated

  @property
  def caches(self) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(r.cache for r in self.runs if r.cache))


@dataclasses.dataclass(frozen=True)
class Plan:
  """Frame counts, grids and study settings shared by all rows."""
  stage2_frames: int
  stage1_frames: int
  init_frames: Tuple[int, ...]
  grids: Dict[str, Tuple[Schedule, ...]]  # route -> the schedules its sweep tries
  adapter_width: int  # the recipe's
  adapter_widths: Tuple[int, ...]
  lr_factors: Tuple[float, ...] = LR_FACTORS
  views: int = CACHE_VIEWS
  eval_every: int = EVAL_EVERY
  quick: bool = False


def _grid(lrs, steps, warmups) -> Tuple[Schedule, ...]:
  return tuple(Schedule(lr, s, w) for lr in lrs for s in steps for w in warmups)


def make_plan(quick: bool, adapter_width: int) -> Plan:
  """The plan from the constants above (QUICK's with quick); checks the equal budget."""
  s = QUICK if quick else dict(
      stage2_frames=STAGE2_FRAMES, stage1_frames=STAGE1_FRAMES, init_frames=INIT_FRAMES,
      learning_rates=LEARNING_RATES, steps=STEPS, warmup_steps=WARMUP_STEPS,
      adapter_widths=ADAPTER_WIDTHS, eval_every=EVAL_EVERY)
  grids = {r: _grid(s['learning_rates'][r], s['steps'][r], s['warmup_steps'][r])
           for r in ROUTES if r not in DIAL_ROUTES}
  grids.update({r: grids['stage2'] for r in DIAL_ROUTES})  # stage 2's equal budget
  if len(grids['baseline']) != len(grids['stage2']):
    raise ValueError(f'Unequal tuning budget: the baseline grid has {len(grids["baseline"])} '
                     f'configurations, stage 2\'s {len(grids["stage2"])}; give both as many '
                     '(LEARNING_RATES, STEPS, WARMUP_STEPS in studies/ablation/plan.py).')
  return Plan(stage2_frames=s['stage2_frames'], stage1_frames=s['stage1_frames'],
              init_frames=tuple(s['init_frames']), grids=grids, adapter_width=adapter_width,
              adapter_widths=tuple(s['adapter_widths']), eval_every=s['eval_every'],
              quick=quick)


# ----------------------------------------------------------------------------------------
# The sweep and its selection rule.
# ----------------------------------------------------------------------------------------

def sweep_runs(plan: Plan, route: str, choice: Dict[str, Schedule],
               schedules: Optional[Sequence[Schedule]] = None) -> List[Run]:
  """The seed-0 runs of one route's grid, or of `schedules` (stage 2's from the chosen
  stage 1)."""
  f1, f2 = plan.stage1_frames, plan.stage2_frames
  schedules = plan.grids[route] if schedules is None else schedules
  if route == 'baseline':
    return [Run('baseline', f2, s) for s in schedules]
  if route == 'stage1':
    return [Run('stage1', f1, s) for s in schedules]
  if route in DIAL_ROUTES:
    stage1, k = dial_stage1(plan, choice), DIAL_LAYERS[DIAL_ROUTES.index(route)]
    return [Run('stage2', f2, s, DIAL_ADAPTER, init=stage1, dial=k) for s in schedules]
  stage1 = Run('stage1', f1, choice['stage1'])
  return [Run('stage2', f2, s, 'attention', init=stage1) for s in schedules]


def dial_stage1(plan: Plan, choice: Dict[str, Schedule]) -> Run:
  """The stage 1 the dial's rows start from: the chosen one, DIAL_STAGE1_FACTOR x longer
  (the same run as row V_stage1_x<F>_mlp's)."""
  s1 = choice['stage1']
  return Run('stage1', plan.stage1_frames,
             dataclasses.replace(s1, steps=s1.steps * DIAL_STAGE1_FACTOR))


def choose(candidates: Sequence[Tuple[Schedule, float]]) -> Schedule:
  """The best final eval top-1 (validation split); a tie goes to the cheaper schedule.

  Cheaper: fewer steps (a step costs the same within a route), then fewer warm-up
  steps, then the lower learning rate (so that the choice never depends on the order
  the runs finished in). Test results are never an argument.
  """
  if not candidates:
    raise ValueError('choose: no finished candidate.')
  return min(candidates, key=lambda c: (-c[1], c[0].steps, c[0].warmup, c[0].lr))[0]


def edges(grid: Sequence[Schedule], tried: Sequence[Schedule],
          chosen: Schedule) -> List[Tuple[str, str]]:
  """[(axis, 'high' or 'low')]: the swept axes on which `chosen` is the highest or the
  lowest value tried."""
  out = []
  for axis in EDGE_FACTORS:
    if len({getattr(s, axis) for s in grid}) < 2:
      continue  # not swept
    values, value = sorted({getattr(s, axis) for s in tried}), getattr(chosen, axis)
    if value in (values[0], values[-1]):
      out.append((axis, 'high' if value == values[-1] else 'low'))
  return out


def extend(grid: Sequence[Schedule], tried: Sequence[Schedule],
           chosen: Schedule) -> List[Schedule]:
  """The schedules one step past each edge `chosen` sits on, not tried yet."""
  new = []
  for axis, side in edges(grid, tried, chosen):
    factor = EDGE_FACTORS[axis] if side == 'high' else 1 / EDGE_FACTORS[axis]
    value = getattr(chosen, axis) * factor
    value = int(round(value)) if axis == 'steps' else float(f'{value:.3g}')  # as tagged
    schedule = dataclasses.replace(chosen, **{axis: value})
    if schedule.steps > schedule.warmup and schedule not in (*tried, *new):
      new.append(schedule)
  return new


# ----------------------------------------------------------------------------------------
# Rows: built from the chosen schedules.
# ----------------------------------------------------------------------------------------

# Run kind -> the routes whose choice its schedule comes from: a stage 2 (and rows I/III)
# trains with stage 2's choice, which is tuned from the chosen stage 1's cache.
_KIND_ROUTES = {'baseline': ('baseline',), 'stage1': ('stage1',),
                'stage2': ('stage1', 'stage2'), 'frozen_image': ('stage1', 'stage2')}


def _run_routes(run: Optional[Run]) -> set:
  if run is None:
    return set()
  dial = {dial_route(run.dial)} if run.dial else set()
  return {*_KIND_ROUTES[run.kind], *dial, *_run_routes(run.init)}


def _any_choice(plan: Plan) -> Dict[str, Schedule]:
  """A schedule per route: enough to build every row when only names and runs' kinds
  matter (the schedules do not change which rows exist)."""
  return {r: plan.grids[r][0] for r in ROUTES}


def routes_for(plan: Plan, row_names: Sequence[str]) -> Tuple[str, ...]:
  """The routes whose sweep the named rows need, read from the runs they train."""
  needed = {route for row in make_rows(plan, _any_choice(plan)) if row.name in row_names
            for run in row.runs for route in _run_routes(run)}
  return tuple(r for r in ROUTES if r in needed)


def _width(plan: Plan, width: int) -> int:
  return 0 if width == plan.adapter_width else width


def make_rows(plan: Plan, choice: Dict[str, Schedule]) -> List[Row]:
  """Every row whose routes are in `choice`, in table order."""
  rows = []
  if 'baseline' in choice:
    rows.append(Row('baseline', 'main', f'end to end at {plan.stage2_frames} frames from '
                    'the image checkpoint', (Run('baseline', plan.stage2_frames,
                                                 choice['baseline']),)))
  if 'stage1' in choice and 'stage2' in choice:
    rows += _two_stage_rows(plan, choice)
  return rows


def _limit_rows(plan: Plan, choice: Dict[str, Schedule]) -> List[Row]:
  """What limits V: better frozen features from a longer stage 1, and the ceiling of the
  baseline's own spatial encoder frozen under stage 2 (needs the baseline's choice)."""
  f1, f2, s1, s2 = plan.stage1_frames, plan.stage2_frames, choice['stage1'], choice['stage2']

  def stage1_x(factor: int, frames: int = f1) -> Run:  # stage 1 at `factor` x its steps
    return Run('stage1', frames, dataclasses.replace(s1, steps=s1.steps * factor))
  long1, few = stage1_x(LONG_STAGE1_FACTOR), FEW_FRAMES_STAGE1
  few1 = stage1_x(few[1], few[0])
  rows = [Row('V_long_stage1', 'limits', f'V with stage 1 trained {LONG_STAGE1_FACTOR}x '
              f'longer ({long1.schedule.steps} steps)',
              (long1, Run('stage2', f2, s2, 'attention', init=long1))),
          Row('V_long_stage1_mlp', 'limits', 'V_long_stage1 with the mlp adapter in '
              'stage 2 (the adapter type with the best validation top-1, mean over seeds, '
              'in the adapter table)', (long1, Run('stage2', f2, s2, 'mlp', init=long1))),
          Row(f'V_stage1_{few[0]}f_long_mlp', 'limits', f'V with stage 1 at {few[0]} '
              f'frames for {few[1]}x the chosen steps ({few1.schedule.steps}) and the mlp '
              'adapter in stage 2', (few1, Run('stage2', f2, s2, 'mlp', init=few1)))]
  for factor in MLP_STAGE1_FACTORS:
    longer1 = stage1_x(factor)
    rows.append(Row(f'V_stage1_x{factor}_mlp', 'limits', f'V with stage 1 trained {factor}x '
                    f'longer ({longer1.schedule.steps} steps) and the mlp adapter in stage 2',
                    (longer1, Run('stage2', f2, s2, 'mlp', init=longer1))))
  if 'baseline' in choice:
    base = Run('baseline', f2, choice['baseline'])
    rows.append(Row('V_from_baseline', 'limits', 'stage 2 (attention adapter) on the '
                    'baseline\'s own spatial encoder, frozen: a ceiling for any stage 1, '
                    'not a recipe (its time includes the whole baseline)',
                    (base, Run('stage2', f2, s2, 'attention', init=base))))
    for name, divisor in EARLY_BASELINE_FRACTIONS.items():
      steps = max(choice['baseline'].steps // divisor, 1)
      early = Run('baseline', f2, dataclasses.replace(choice['baseline'], steps=steps))
      rows.append(Row(f'early_{name}_mlp', 'limits', f'stage 1 = the baseline stopped at '
                      f'{steps} steps (end to end at {f2} frames), frozen; stage 2 with '
                      'the mlp adapter from its cache', (early, Run('stage2', f2, s2, 'mlp',
                                                                    init=early))))
  return rows


def _two_stage_rows(plan: Plan, choice: Dict[str, Schedule]) -> List[Row]:
  f1, f2, s2 = plan.stage1_frames, plan.stage2_frames, choice['stage2']
  stage1 = {f: Run('stage1', f, choice['stage1']) for f in {f1, *plan.init_frames}}

  def image(adapter, width=0, schedule=s2):
    return (Run('frozen_image', f2, schedule, adapter, _width(plan, width)),)

  def two_stage(f, adapter='attention', width=0):
    return (stage1[f], Run('stage2', f2, s2, adapter, _width(plan, width), stage1[f]))
  v = f'stage 1 end to end at {f1} frames, extraction, stage 2 from the cache'
  rows = [Row('I', 'main', 'frozen image spatial, no adapter, random temporal init',
              image('none')),
          Row('III', 'main', 'frozen image spatial + attention adapter, random temporal '
              'init', image('attention')),
          Row('V', 'main', v + ' (frozen + attention adapter + temporal init)',
              two_stage(f1))]
  rows += [Row(f'stage1_{f}f', 'init_frames', f'stage 1 at {f} frames, then stage 2 '
               '(attention adapter)', two_stage(f)) for f in plan.init_frames]
  rows += [Row(f'adapter_{a}', 'adapter', f'V with the {a!r} adapter in stage 2',
               two_stage(f1, a)) for a in ADAPTERS]
  rows += _limit_rows(plan, choice)
  rows += _dial_rows(plan, choice)
  return rows + _adapter_study_rows(plan, choice, image, two_stage)


def _dial_rows(plan: Plan, choice: Dict[str, Schedule]) -> List[Row]:
  """The spatial dial at each k whose route was chosen: with the recipe's stage 1, and
  without stage 1 (the image checkpoint's encoder, as row I)."""
  rows, f2, stage1 = [], plan.stage2_frames, dial_stage1(plan, choice)
  for k in DIAL_LAYERS:
    schedule = choice.get(dial_route(k))
    if schedule is None:
      continue
    rows.append(Row(f'V_stage1_x{DIAL_STAGE1_FACTOR}_mlp_dial{k}', 'dial',
                    f'V_stage1_x{DIAL_STAGE1_FACTOR}_mlp with the top {k} spatial layers '
                    'trained in stage 2 (from a cache taken below them)',
                    (stage1, Run('stage2', f2, schedule, DIAL_ADAPTER, init=stage1,
                                 dial=k))))
    rows.append(Row(f'I_mlp_dial{k}', 'dial', f'no stage 1: the image checkpoint\'s '
                    f'spatial encoder with its top {k} layers trained at {f2} frames, the '
                    'mlp adapter, temporal random',
                    (Run('frozen_image', f2, schedule, DIAL_ADAPTER, dial=k),)))
  return rows


def _adapter_study_rows(plan, choice, image, two_stage) -> List[Row]:
  """Why III <= I, and what changes it: width, learning rate, what the adapter reads."""
  f1, s2 = plan.stage1_frames, choice['stage2']
  rows = [Row(f'III_w{w}', 'adapter_study', f'III with adapter width {w}',
              image('attention', w)) for w in plan.adapter_widths]
  for factor in plan.lr_factors:
    lr = s2.lr * factor
    rows.append(Row(f'III_lr_x{factor:.2g}', 'adapter_study',
                    f'III at {factor:.2g}x the chosen stage-2 learning rate ({lr:.3g})',
                    image('attention', schedule=dataclasses.replace(s2, lr=lr))))
  rows.append(Row('I_mlp', 'adapter_study', 'frozen image spatial + the mlp adapter '
                  '(reads only the CLS token; the attention adapter reads every token)',
                  image('mlp')))
  rows += [Row(f'V_w{w}', 'adapter_study', f'V with adapter width {w}',
               two_stage(f1, 'attention', w)) for w in plan.adapter_widths]
  return rows


def row_names(plan: Plan) -> List[str]:
  """Every row's name, in table order."""
  return [r.name for r in make_rows(plan, _any_choice(plan))]


def select_row_names(plan: Plan, names: Sequence[str]) -> List[str]:
  known = row_names(plan)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f'--rows: unknown row(s) {unknown}; choose from {known}.')
  return [n for n in known if n in names] if names else known


# ----------------------------------------------------------------------------------------
# Configs: the miniature experiment files, then this run's overrides.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Study:
  """Where the study's runs read their data and write their folders."""
  workdir: str
  data_dir: str
  dataset_overrides: Tuple[str, ...] = ()  # 'dataset.key=value' (an existing dataset)
  image_checkpoint: str = ''

  def run_dir(self, seed: int, key: str) -> str:
    return os.path.join(self.workdir, f'seed{seed}', key)

  def cache_dir(self, seed: int, name: str) -> str:
    return os.path.join(self.workdir, f'seed{seed}', f'cache_{name}')


def _apply_quick(config: ml_collections.ConfigDict) -> None:
  """A tiny model, frames and batch: the whole study's plumbing in about a minute."""
  m = config.model
  m.hidden_size = 16
  for enc in (m.spatial_transformer, m.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 1, 2, 32
  # As many spatial layers as the deepest dial, so that every row kind runs.
  m.spatial_transformer.num_layers = max(DIAL_LAYERS)
  m.adapter.hidden_size, m.adapter.num_heads = 8, 2
  config.dataset.min_resize = config.dataset.crop_size = 16
  config.batch_size = config.eval_batch_size = 4
  config.dataset.shuffle_buffer = 16
  config.log_summary_steps = 1


def experiment_config(kind: str, study: Study, quick: bool) -> ml_collections.ConfigDict:
  """experiments/synthetic_<kind>.py on the study's data (with the quick overrides)."""
  config = experiment_configs.load(
      EXPERIMENTS[kind], [f'dataset.base_dir={study.data_dir}', *study.dataset_overrides])
  if quick:
    _apply_quick(config)
  return config


def run_config(run: Run, plan: Plan, *, seed: int, study: Study) -> ml_collections.ConfigDict:
  """The config of one run: an experiment file, a recipe stage, its schedule and seed."""
  config = experiment_config(run.kind, study, plan.quick)
  image = study.image_checkpoint
  if run.kind == 'baseline':
    recipes.baseline(config, run.frames, image)
  elif run.kind == 'stage1':
    recipes.stage1(config, image, run.frames)
  elif run.kind == 'stage2':
    recipes.stage2(config, study.run_dir(seed, run.init.key), run.frames, run.adapter)
  else:  # Rows I/III: stage 2's training, from the image checkpoint, temporal random.
    recipes.baseline(config, run.frames, image)
    config.stage = 'stage2'
    config.model.freeze_spatial = True
    config.model.adapter.type = run.adapter
  if run.kind != 'stage2':
    config.init_from.checkpoint_format = 'vit_npz'
  if run.adapter_width:
    config.model.adapter.hidden_size = run.adapter_width
  config.model.trainable_spatial_layers = run.dial
  if run.cache:
    config.feature_cache.dir = study.cache_dir(seed, run.cache)
  config.experiment_name = f'ablation_{run.key}_seed{seed}'
  config.rng_seed = seed
  config.num_training_steps = run.schedule.steps
  config.lr_configs.base_learning_rate = run.schedule.lr
  config.lr_configs.warmup_steps = run.schedule.warmup
  # Evaluation time is not training time (the trainer excludes it), so frequent
  # evaluations only add points to the time-to-accuracy curves.
  config.log_eval_steps = plan.eval_every
  return config


def cache_config(run: Run, plan: Plan, *, seed: int,
                 study: Study) -> ml_collections.ConfigDict:
  """The config a frozen run's cache is extracted with: every token (the attention
  adapter's input), so that 'mlp' and 'none' runs read the same cache."""
  return run_config(dataclasses.replace(run, adapter='attention', adapter_width=0), plan,
                    seed=seed, study=study)
