r"""The paper's ablation table, in miniature, on the synthetic action dataset.

  python -m vivit_adapter.ablation --workdir=runs/ablation --out=docs/ablation \
      [--seeds=0,1,2] [--rows=baseline,I,III,V,...] [--data=DIR] [--quick]

Rows, all at the stage-2 frame count of experiments/synthetic_stage2.py:
* baseline: end to end from the image checkpoint (experiments/synthetic_baseline.py);
* I: frozen image-checkpoint spatial encoder, no adapter, random temporal init;
* III: as I, with the attention adapter;
* V: the two-stage recipe, stage 1 end to end on few frames, then stage 2 (frozen
  spatial + adapter + temporal init from stage 1).
Sub-tables: stage 1 at 2 / 4 / 8 frames (then the same stage 2), and the stage-2
adapter type (attention / mlp / none). The image checkpoint, standing in for ImageNet,
comes from `vivit_adapter.image_pretrain` (made once, shared by every row and seed).
Schedules: every end-to-end run (the baseline and each stage 1) trains for the steps of
experiments/synthetic_stage1.py, every frozen run (I, III, each stage 2) for those of
experiments/synthetic_stage2.py. The data is the demo's (vivit_adapter.demo.FULL).

Every run is an in-process `train_and_evaluate` in <workdir>/seed<k>/<run>; a run
whose summary.json exists is reused, so an interrupted ablation resumes where it
stopped (an unfinished run restarts from scratch, so that its time is whole). A row's wall time is the sum of its runs' train_time_s (V: stage 1 + stage 2).
Rows run seed by seed, main table first, so a partial ablation is still a table.
"""

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from vivit_adapter import config_loading, recipes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = {kind: os.path.join(REPO, 'experiments', f'synthetic_{kind}.py')
               for kind in ('baseline', 'stage1', 'stage2')}
IMAGE_CHECKPOINT = 'vit_image.npz'
METRICS = ('top1', 'top5')


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
  config = config_loading.load_config(EXPERIMENTS[kind], [f'dataset.base_dir={data_dir}'])
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
    raise ValueError(f'{EXPERIMENTS["baseline"]} uses {cfgs["baseline"].dataset.num_frames} '
                     f'frames, {EXPERIMENTS["stage2"]} {f2}: the rows need one stage-2 count.')
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


# ----------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------

def ensure_data(data_dir: str, quick: bool) -> None:
  """Generates the synthetic dataset if absent: the demo's (the one recipes.synthetic is
  tuned for), or a tiny one with quick."""
  if os.path.exists(os.path.join(data_dir, 'metadata.json')):
    return
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from vivit_adapter import demo  # pylint: disable=g-import-not-at-top
  sizes = (dict(resolution=32, num_frames=16, train_per_class=4, val_per_class=1,
                test_per_class=1, classes=list(synthetic.ACTION_NAMES[:6]), num_shards=2)
           if quick else demo.FULL.data)
  print(f'Generating the synthetic dataset in {data_dir} ...', flush=True)
  synthetic.generate(data_dir, progress=False, **sizes)


def ensure_image_checkpoint(workdir: str, data_dir: str, quick: bool) -> Dict:
  """Pretrains the image ViT once (the ImageNet stand-in) and returns its report."""
  from vivit_adapter import image_pretrain  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, IMAGE_CHECKPOINT)
  report_path = os.path.splitext(path)[0] + '.json'
  if os.path.exists(path) and os.path.exists(report_path):
    with open(report_path) as f:
      return json.load(f)
  settings = image_pretrain.PretrainSettings()
  if quick:
    settings = image_pretrain.PretrainSettings(steps=3, batch_size=8, num_train_images=16,
                                               num_eval_images=8)
  print(f'Pretraining the image ViT -> {path} ...', flush=True)
  return image_pretrain.pretrain(path, experiment_config('stage1', data_dir, quick),
                                 data_dir=data_dir, settings=settings)


def _read_summary(run_dir: str) -> Optional[Dict]:
  """The finished run's summary.json, with its eval curve from history.jsonl added."""
  path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  if summary.get('preempted'):
    return None
  summary['eval_curve'] = read_eval_curve(run_dir, summary)
  return summary


def read_eval_curve(run_dir: str, summary: Dict) -> List[Dict]:
  """[{step, train_time_s, top1 (%)}] of every evaluation of a finished run.

  The trainer records the training seconds of each evaluation; for runs from before
  it did, they are estimated from the step (steps cost the same: time ∝ step).
  """
  path = os.path.join(run_dir, 'history.jsonl')
  if not os.path.exists(path):
    return []
  per_step = summary['train_time_s'] / max(summary['step'], 1)
  curve = []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get('kind') == 'eval' and 'top1' in record:
        curve.append({'step': record['step'], 'top1': 100 * record['top1'],
                      'train_time_s': record.get('train_time_s',
                                                 record['step'] * per_step)})
  return curve


def ensure_run(run: Run, config: ml_collections.ConfigDict, run_dir: str,
               train: bool = True) -> Optional[Dict]:
  """The run's summary: read back when it finished before, else trained now (or None)."""
  summary = _read_summary(run_dir)
  if summary is not None and summary['step'] != config.num_training_steps:
    # The experiment files changed since: mixing both schedules would skew the rows.
    message = (f'{run_dir} ran {summary["step"]} steps, the experiment files now give '
               f'{config.num_training_steps} for {run.kind}: use a fresh --workdir, or '
               'restore the experiment settings the finished runs used.')
    if train:
      raise ValueError(message)
    print(f'  WARNING: {message}', flush=True)
  if summary is not None or not train:
    return summary
  from vivit_adapter.train_lib import trainer  # pylint: disable=g-import-not-at-top
  if os.path.exists(run_dir):
    # An interrupted run would resume from its checkpoint, but its train_time_s would
    # then count only the resumed part: the table's wall times need whole runs.
    print(f'  {run.key}: discarding the unfinished run in {run_dir}', flush=True)
    shutil.rmtree(run_dir)
  t = time.time()
  summary = trainer.train_and_evaluate(config, run_dir)
  if summary.get('preempted'):
    raise KeyboardInterrupt(f'{run_dir} was stopped (SIGTERM); rerun to resume.')
  summary = _read_summary(run_dir)  # as a later rerun reads it, eval curve included
  print(f'  {run.key}: test top-1 {summary["test"].get("top1", float("nan")):.3f}, '
        f'{summary["train_time_s"]:.1f}s training ({time.time() - t:.0f}s wall)', flush=True)
  return summary


def run_all(rows: List[Row], plan: Plan, seeds: Sequence[int], *, workdir: str,
            data_dir: str, image_checkpoint: str,
            train: bool = True) -> Dict[int, Dict[str, Dict]]:
  """{seed: {run key: summary}} for the runs the rows need, seed by seed.

  With train=False only finished runs are read (a report of what exists so far).
  """
  runs = make_runs(plan)
  results = {}
  for seed in seeds:
    run_dirs = {k: os.path.join(workdir, f'seed{seed}', k) for k in runs}
    done = results.setdefault(seed, {})
    for row in rows:
      for key in row.runs:
        if key not in done:
          config = run_config(runs[key], plan, seed=seed, data_dir=data_dir,
                              image_checkpoint=image_checkpoint, run_dirs=run_dirs)
          summary = ensure_run(runs[key], config, run_dirs[key], train)
          if summary is not None:
            done[key] = summary
  return results


# ----------------------------------------------------------------------------------------
# Aggregation.
# ----------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
  """Mean and sample standard deviation (ddof=1); std is None for a single value."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def run_record(run: Run, summary: Dict) -> Dict:
  """What the table and the tests need from one run's summary.json."""
  cfg = summary['config']
  return {
      'kind': run.kind, 'num_frames': cfg['dataset']['num_frames'],
      'adapter': cfg['model']['adapter']['type'],
      'freeze_spatial': cfg['model']['freeze_spatial'], 'steps': summary['step'],
      'init_from': cfg['init_from']['checkpoint_path'], 'start': summary['start'],
      'params': summary['params'], 'frozen_modules': summary['frozen_modules'],
      'train_time_s': summary['train_time_s'],
      'eval_curve': summary.get('eval_curve', []),
      'test': {m: 100 * summary['test'][m] for m in METRICS if m in summary['test']},
      'eval': {m: 100 * summary['eval'][m] for m in METRICS if m in summary['eval']}}


def aggregate_row(row: Row, runs: Dict[str, Run], results: Dict[int, Dict[str, Dict]]) -> Dict:
  """Per-seed values and mean/std of test top-1/top-5 (percent) and total wall time."""
  seeds = sorted(s for s, done in results.items() if all(k in done for k in row.runs))
  per_seed = {}
  for s in seeds:
    records = {k: run_record(runs[k], results[s][k]) for k in row.runs}
    last = records[row.runs[-1]]  # the run whose model the row evaluates
    per_seed[s] = {'test_top1': last['test']['top1'], 'test_top5': last['test']['top5'],
                   'eval_top1': last['eval']['top1'], 'eval_top5': last['eval']['top5'],
                   'wall_time_s': sum(r['train_time_s'] for r in records.values()),
                   'runs': records}
  stats = {}
  for metric in ('test_top1', 'test_top5', 'eval_top1', 'eval_top5', 'wall_time_s'):
    if seeds:
      stats[metric] = dict(zip(('mean', 'std'),
                               mean_std([per_seed[s][metric] for s in seeds])))
  return {'name': row.name, 'table': row.table, 'description': row.description,
          'runs': list(row.runs), 'seeds': seeds, 'per_seed': per_seed, 'stats': stats}


def check_targets(by_name: Dict[str, Dict]) -> List[Dict]:
  """The issue's targets, each with the measured numbers and whether it holds."""
  def stat(row, metric):
    s = by_name.get(row, {}).get('stats', {}).get(metric)
    return None if s is None else s['mean']
  base, v = stat('baseline', 'test_top1'), stat('V', 'test_top1')
  base_t, v_t = stat('baseline', 'wall_time_s'), stat('V', 'wall_time_s')
  i, iii = stat('I', 'test_top1'), stat('III', 'test_top1')
  targets = []
  if base is not None and v is not None:
    targets.append({'target': 'V top-1 >= baseline top-1 - 0.5 points',
                    'measured': f'V {v:.2f} vs baseline {base:.2f} ({v - base:+.2f})',
                    'met': v >= base - 0.5})
  if base_t is not None and v_t is not None:
    targets.append({'target': "V total wall time <= 0.45x the baseline's",
                    'measured': f'{v_t / base_t:.3f}x ({v_t:.0f}s vs {base_t:.0f}s)',
                    'met': v_t <= 0.45 * base_t})
  if None not in (i, iii, v):
    targets.append({'target': 'top-1: I < III < V',
                    'measured': f'I {i:.2f}, III {iii:.2f}, V {v:.2f}',
                    'met': i < iii < v})
  return targets


def _first_time_at(curve: Sequence[Dict], target: float) -> Optional[float]:
  return next((p['train_time_s'] for p in curve if p['top1'] >= target), None)


# Two-stage rows compared with the baseline in time to accuracy (when they ran).
TIME_ROWS = ('V', 'stage2_long')


def time_to_accuracy(by_name: Dict[str, Dict], row: str = 'V') -> List[Dict]:
  """Per seed: training seconds until the baseline and `row` first reach one eval top-1.

  The target is the lower of the two rows' best eval top-1 (%), so that both reach it.
  A two-stage row's time is its whole stage 1 plus stage 2 until the target (stage 1 is
  judged on its few-frame clips, so only stage 2's evaluations count).
  """
  base, v = by_name.get('baseline'), by_name.get(row)
  if not base or not v:
    return []
  out = []
  for seed in sorted(set(base['seeds']) & set(v['seeds'])):
    b_runs, v_runs = base['per_seed'][seed]['runs'], v['per_seed'][seed]['runs']
    b_curve = b_runs[base['runs'][-1]]['eval_curve']
    s1, s2 = (v_runs[k] for k in v['runs'])
    if not b_curve or not s2['eval_curve']:
      continue
    target = min(max(p['top1'] for p in b_curve), max(p['top1'] for p in s2['eval_curve']))
    b_t = _first_time_at(b_curve, target)
    v_t = s1['train_time_s'] + _first_time_at(s2['eval_curve'], target)
    out.append({'seed': seed, 'target_eval_top1': target, 'baseline_s': b_t, 'v_s': v_t,
                'v_stage1_s': s1['train_time_s'], 'ratio': v_t / b_t,
                'evaluations': [len(b_curve), len(s2['eval_curve'])]})
  return out


def machine_info() -> Dict:
  load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'load_average_1_5_15': [round(x, 2) for x in load]}


def build_report(rows: List[Row], plan: Plan, seeds: Sequence[int], results, *,
                 image_report: Dict, data_dir: str, command: str, started: Dict) -> Dict:
  """Everything docs/ablation.{json,md,png} show, as one JSON-serialisable dict."""
  runs = make_runs(plan)
  aggregated = [aggregate_row(r, runs, results) for r in rows]
  by_name = {a['name']: a for a in aggregated}
  missing = [f'{a["name"]} seed {s}' for a in aggregated for s in seeds
             if s not in a['seeds']]
  meta_path = os.path.join(data_dir, 'metadata.json')
  with open(meta_path) as f:
    meta = json.load(f)
  return {
      'command': command, 'complete': not missing, 'missing': missing,
      'seeds': list(seeds), 'quick': plan.quick,
      'plan': dataclasses.asdict(plan), 'rows': aggregated,
      'targets': check_targets(by_name),
      'time_to_accuracy': {row: time_to_accuracy(by_name, row) for row in TIME_ROWS
                           if row in by_name},
      'image_checkpoint': image_report,
      'data': {k: meta.get(k) for k in ('num_classes', 'splits', 'resolution',
                                        'num_frames', 'scene', 'generator_version')},
      'data_dir': data_dir, 'machine_at_start': started, 'machine_at_end': machine_info()}


# ----------------------------------------------------------------------------------------
# Output: docs/ablation.{json,md,png}.
# ----------------------------------------------------------------------------------------

TABLES = (('main', 'Main rows (the paper\'s I / III / V against the baseline)'),
          ('init_frames', 'Stage-1 frame count (init-frames ablation)'),
          ('adapter', 'Stage-2 adapter type'),
          ('stage2_steps', 'Stage-2 length (V as run, and with the baseline\'s steps)'))
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
    mean, std = mean_std([e['ratio'] for e in entries])
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


def write_outputs(report: Dict, out: str) -> List[str]:
  """Writes <out>.json, <out>.md, <out>.png and <out>_curves.png; returns their paths."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  paths = [out + '.json', out + '.md', out + '.png']
  with open(paths[0], 'w') as f:
    json.dump(report, f, indent=1)
  text = markdown(report, previous_path=paths[1])
  with open(paths[1], 'w') as f:
    f.write(text)
  plot(report, paths[2])
  if plot_time_to_accuracy(report, out + '_curves.png'):
    paths.append(out + '_curves.png')
  return paths


# ----------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]]):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='one sub-folder per seed and run')
  parser.add_argument('--out', required=True, help='output prefix, e.g. docs/ablation')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds')
  parser.add_argument('--rows', default='', help='comma-separated row names (default all)')
  parser.add_argument('--data', default='', help='synthetic dataset (default '
                      '<workdir>/data, generated when missing)')
  parser.add_argument('--quick', action='store_true', help='tiny model, data and steps')
  parser.add_argument('--report_only', action='store_true',
                      help='train nothing: write the table from the finished runs')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
  import sys  # pylint: disable=g-import-not-at-top
  args = parse_args(argv)
  from data_pipelines import tf_runtime  # pylint: disable=g-import-not-at-top
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  # The command that completes the table: --report_only would train nothing.
  command = 'python -m vivit_adapter.ablation ' + ' '.join(
      a for a in (sys.argv[1:] if argv is None else argv) if a != '--report_only')
  started = machine_info()
  seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  data_dir = args.data or os.path.join(args.workdir, 'data')
  ensure_data(data_dir, args.quick)
  plan = make_plan(data_dir, args.quick)
  rows = select_rows(make_rows(plan), [r for r in args.rows.split(',') if r])
  image_report = ensure_image_checkpoint(args.workdir, data_dir, args.quick)
  results = run_all(rows, plan, seeds, workdir=args.workdir, data_dir=data_dir,
                    image_checkpoint=os.path.join(args.workdir, IMAGE_CHECKPOINT),
                    train=not args.report_only)
  report = build_report(rows, plan, seeds, results, image_report=image_report,
                        data_dir=data_dir, command=command, started=started)
  for path in write_outputs(report, args.out):
    print(f'Wrote {path}')
  return report


if __name__ == '__main__':
  main()
