"""The ablation's plan: its runs, its rows (which runs each row needs) and each run's config.

Rows share runs (row V's stage 1 serves five rows), so runs are planned once, by key.
"""

import dataclasses
from typing import Dict, List, Sequence, Tuple

import ml_collections

from vivit_adapter import recipes
from vivit_adapter.studies import experiment_configs

# Run kind -> the experiment (experiments/synthetic_<kind>.py) it starts from.
EXPERIMENTS = {kind: f'synthetic_{kind}' for kind in ('baseline', 'stage1', 'stage2')}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run. kind: 'baseline', 'frozen_image' (rows I/III), 'stage1', 'stage2'."""
  key: str
  kind: str
  frames: int
  adapter: str = 'none'
  init_run: str = ''  # stage2: the key of the stage-1 run it starts from
  schedule: str = ''  # the Plan.steps entry it trains for ('' = its kind's)


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  table: str  # 'main', 'init_frames', 'adapter' or 'stage2_steps'
  description: str
  runs: Tuple[str, ...]  # run keys, in the order they must run


@dataclasses.dataclass(frozen=True)
class Plan:
  """Frame counts and step counts shared by all rows (explicit, so rows are comparable)."""
  stage2_frames: int
  stage1_frames: int  # row V's stage 1
  init_frames: Tuple[int, ...]  # the init-frames sub-table's stage-1 frame counts
  steps: Dict[str, int]  # kind -> num_training_steps
  quick: bool = False
  eval_every: int = 50  # steps between evaluations: the time-to-accuracy curves' points


# ----------------------------------------------------------------------------------------
# Rows and runs.
# ----------------------------------------------------------------------------------------

def _stage1_key(frames: int) -> str:
  return f'stage1_{frames}f'


def _stage2_key(frames: int, adapter: str) -> str:
  return f'stage2_from{frames}f_{adapter}'


def _stage2_long_key(frames: int) -> str:
  """V's stage 2 (attention adapter) trained for the baseline's steps."""
  return _stage2_key(frames, 'attention') + '_long'


def make_runs(plan: Plan) -> Dict[str, Run]:
  """Every run any row needs, by key; rows share runs (V's stage 1 is in 5 rows)."""
  f2 = plan.stage2_frames
  runs = [Run('baseline', 'baseline', f2),
          Run('frozen_image_none', 'frozen_image', f2, 'none'),
          Run('frozen_image_attention', 'frozen_image', f2, 'attention')]
  for f1 in sorted({plan.stage1_frames, *plan.init_frames}):
    runs += [Run(_stage1_key(f1), 'stage1', f1),
             Run(_stage2_key(f1, 'attention'), 'stage2', f2, 'attention', _stage1_key(f1))]
  for adapter in ('mlp', 'none'):
    runs.append(Run(_stage2_key(plan.stage1_frames, adapter), 'stage2', f2, adapter,
                    _stage1_key(plan.stage1_frames)))
  # V's stage 2 as long as the baseline: is V short of training or of features?
  runs.append(Run(_stage2_long_key(plan.stage1_frames), 'stage2', f2,
                  'attention', _stage1_key(plan.stage1_frames), schedule='baseline'))
  return {r.key: r for r in runs}


def _two_stage(f1: int, adapter: str) -> Tuple[str, str]:
  return (_stage1_key(f1), _stage2_key(f1, adapter))


def make_rows(plan: Plan) -> List[Row]:
  f1, f2 = plan.stage1_frames, plan.stage2_frames
  rows = [
      Row('baseline', 'main', f'end to end at {f2} frames from the image checkpoint',
          ('baseline',)),
      Row('I', 'main', 'frozen image spatial, no adapter, random temporal init',
          ('frozen_image_none',)),
      Row('III', 'main', 'frozen image spatial + attention adapter, random temporal init',
          ('frozen_image_attention',)),
      Row('V', 'main', f'stage 1 end to end at {f1} frames, then stage 2 (frozen + '
          'attention adapter + temporal init)', _two_stage(f1, 'attention'))]
  rows += [Row(f'stage1_{f}f', 'init_frames', f'stage 1 at {f} frames, then stage 2 '
               '(attention adapter)', _two_stage(f, 'attention'))
           for f in plan.init_frames]
  rows += [Row(f'adapter_{a}', 'adapter', f'V with the {a!r} adapter in stage 2',
               _two_stage(f1, a)) for a in ('attention', 'mlp', 'none')]
  rows += [Row('stage2_short', 'stage2_steps', f'V: stage 2 for {plan.steps["stage2"]} '
               'steps (its experiment file)', _two_stage(f1, 'attention')),
           Row('stage2_long', 'stage2_steps', f'V with stage 2 as long as the baseline '
               f'({plan.steps["baseline"]} steps)',
               (_stage1_key(f1), _stage2_long_key(f1)))]
  return rows


def select_rows(rows: List[Row], names: Sequence[str]) -> List[Row]:
  if not names:
    return rows
  known = {r.name: r for r in rows}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f'--rows: unknown row(s) {unknown}; choose from {list(known)}.')
  return [r for r in rows if r.name in names]


# ----------------------------------------------------------------------------------------
# Configs: the synthetic experiment files, then this run's overrides.
# ----------------------------------------------------------------------------------------

def _apply_quick(config: ml_collections.ConfigDict) -> None:
  """A tiny model and batch: the whole ablation's plumbing in well under a minute."""
  m = config.model
  m.hidden_size = 16
  for enc in (m.spatial_transformer, m.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = 1, 2, 32
  m.adapter.hidden_size, m.adapter.num_heads = 8, 2
  config.batch_size = config.eval_batch_size = 8
  config.dataset.shuffle_buffer = 16
  config.log_summary_steps = 1


def experiment_config(kind: str, data_dir: str, quick: bool) -> ml_collections.ConfigDict:
  """experiments/synthetic_<kind>.py on `data_dir` (with the quick overrides)."""
  config = experiment_configs.load(EXPERIMENTS[kind], [f'dataset.base_dir={data_dir}'])
  if quick:
    _apply_quick(config)
  return config


def make_plan(data_dir: str, quick: bool) -> Plan:
  """Frame counts from the experiment files; their schedules as explicit step counts."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import trainer  # pylint: disable=g-import-not-at-top
  cfgs = {k: experiment_config(k, data_dir, quick) for k in EXPERIMENTS}
  info = data_pipelines.dataset_info(cfgs['baseline'].dataset)
  steps = {k: trainer.setup_lengths(c, info)[1] for k, c in cfgs.items()}
  # One schedule per training kind: every end-to-end run (the baseline, each stage 1)
  # trains for stage 1's steps, every frozen run (I, III, each stage 2) for stage 2's.
  # experiments/synthetic_baseline.py is shorter only to fit the demo's 15 minutes.
  steps = {'baseline': steps['stage1'], 'stage1': steps['stage1'],
           'stage2': steps['stage2'], 'frozen_image': steps['stage2']}
  f2 = cfgs['stage2'].dataset.num_frames
  if cfgs['baseline'].dataset.num_frames != f2:
    raise ValueError(f'{experiment_configs.path(EXPERIMENTS["baseline"])} uses '
                     f'{cfgs["baseline"].dataset.num_frames} frames, '
                     f'{experiment_configs.path(EXPERIMENTS["stage2"])} {f2}: the rows '
                     'need one stage-2 count.')
  if quick:  # Short clips and 2 steps: every row's plumbing, none of its cost.
    return Plan(stage2_frames=8, stage1_frames=4, init_frames=(2, 4),
                steps={k: 2 for k in steps}, quick=True, eval_every=1)
  return Plan(stage2_frames=f2, stage1_frames=cfgs['stage1'].dataset.num_frames,
              init_frames=(2, 4, 8), steps=steps)


def run_config(run: Run, plan: Plan, *, seed: int, data_dir: str, image_checkpoint: str,
               run_dirs: Dict[str, str]) -> ml_collections.ConfigDict:
  """The config of one run: an experiment file, a recipe stage, explicit steps and seed."""
  kind_file = {'frozen_image': 'stage2'}.get(run.kind, run.kind)
  config = experiment_config(kind_file, data_dir, plan.quick)
  if run.kind == 'baseline':
    recipes.baseline(config, run.frames, image_checkpoint)
  elif run.kind == 'stage1':
    recipes.stage1(config, image_checkpoint, run.frames)
  elif run.kind == 'stage2':
    recipes.stage2(config, run_dirs[run.init_run], run.frames, run.adapter)
  else:  # Rows I/III: stage 2's training, but from the image checkpoint, temporal random.
    recipes.baseline(config, run.frames, image_checkpoint)
    config.stage = 'stage2'
    config.model.freeze_spatial = True
    config.model.adapter.type = run.adapter
  if run.kind != 'stage2':
    config.init_from.checkpoint_format = 'vit_npz'
  config.experiment_name = f'ablation_{run.key}_seed{seed}'
  config.rng_seed = seed
  config.num_training_steps = plan.steps[run.schedule or run.kind]
  # Evaluation time is not training time (the trainer excludes it), so frequent
  # evaluations only add points to the time-to-accuracy curves.
  config.log_eval_steps = plan.eval_every
  return config
