r"""`make demo`: the synthetic dataset, stage 1 -> stage 2 and the baseline, one table.

  python -m vivit_adapter.demo --workdir=runs/demo [--quick]   (vivit_adapter/demo.py)

1. Generates the embedded synthetic action dataset into WORKDIR/data (kept, and
   reused while its metadata.json matches what the demo asks for).
2. Runs the three experiment files, in process, each in its own workdir:
   experiments/synthetic_stage1.py  -> WORKDIR/stage1    (8 frames, end to end)
   feature extraction               -> WORKDIR/cache     (the frozen part of stage 2,
                                       once per clip and stored view)
   experiments/synthetic_stage2.py  -> WORKDIR/stage2    (32 frames, frozen spatial
                                       + adapter, initialised from WORKDIR/stage1,
                                       trained from WORKDIR/cache)
   experiments/synthetic_baseline.py -> WORKDIR/baseline (32 frames, end to end)
   A run that finished with the same config is reused, so a second `make demo` after
   an interruption only does what is left; an interrupted run starts again from
   scratch, so that its training time is whole (the rule of `studies.runs`).
3. Prints a markdown table (parameters, compiled step memory, training time, eval and
   test top-1/top-5 per run) and how stage 1 + stage 2 compares with the baseline;
   writes it to WORKDIR/results.md and WORKDIR/results.json.

The training settings are the experiment files' own: the demo only points them at
WORKDIR. `--quick` shrinks data, model and steps to a smoke test of the whole path.
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from data_pipelines import synthetic
from vivit_adapter.studies import experiment_configs
from vivit_adapter.studies import runs as study_runs

RESULTS_MD, RESULTS_JSON = 'results.md', 'results.json'


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # also the run's folder under WORKDIR
  experiment: str  # experiments/<experiment>.py, as a module name
  label: str  # what the table calls it
  expected_s: int  # wall time on a quiet 2-core CPU, for the progress line


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the demo generates and runs."""
  data: Dict[str, Any]  # keyword arguments of synthetic.generate
  overrides: Tuple[str, ...] = ()  # 'key=value' for all three runs
  runs: Tuple[Run, ...] = ()
  views: int = 4  # augmented views per training clip in stage 2's feature cache


RUNS = (
    Run('stage1', 'synthetic_stage1', 'stage 1 (end to end)', 160),
    Run('stage2', 'synthetic_stage2', 'stage 2 (frozen spatial + adapter)', 130),
    Run('baseline', 'synthetic_baseline', 'baseline (end to end)', 290),
)

# The dataset the synthetic experiments are tuned for (recipes.synthetic): 64 frames of
# 32x32 per clip, the 12 classes without the rotate pair, an easy scene (one actor, no
# distractors, little noise or shake) with fast moves (3 frame widths per clip).
DEMO_CLASSES = ('move_right', 'move_left', 'move_down', 'move_up', 'grow', 'shrink',
                'fade_in', 'fade_out', 'right_then_up', 'right_then_down',
                'up_then_right', 'down_then_right')
DEMO_SCENE = synthetic.SceneConfig(noise_std=0.01, max_distractors=0, camera_jitter=0.005,
                                   flicker=0.0, move_travel=3.0)
FULL = Settings(data=dict(train_per_class=150, val_per_class=20, test_per_class=20,
                          classes=list(DEMO_CLASSES), scene=DEMO_SCENE),
                runs=RUNS)

# Seconds per run: a tiny model on a few clips, just enough to run every piece.
QUICK = Settings(
    data=dict(resolution=16, num_frames=32, train_per_class=2, val_per_class=1,
              test_per_class=1, num_shards=1),
    overrides=(
        'dataset.min_resize=16', 'dataset.crop_size=16', 'dataset.stride=1',
        'model.hidden_size=16', 'model.patches.size=(8,8,2)',
        'model.spatial_transformer.num_layers=1', 'model.temporal_transformer.num_layers=1',
        'model.spatial_transformer.mlp_dim=32', 'model.temporal_transformer.mlp_dim=32',
        'model.spatial_transformer.num_heads=2', 'model.temporal_transformer.num_heads=2',
        'model.adapter.hidden_size=8', 'model.adapter.num_heads=2',
        'batch_size=4', 'eval_batch_size=8', 'num_training_steps=3',
        'lr_configs.warmup_steps=1', 'log_summary_steps=1', 'num_training_epochs=1.0'),
    runs=tuple(dataclasses.replace(r, expected_s=20) for r in RUNS))


def say(message: str) -> None:
  """A demo progress line: on stdout, apart from the trainer's log on stderr."""
  print(f'[demo] {message}', flush=True)


# ----------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------

def requested_metadata(data: Dict[str, Any]) -> Dict[str, Any]:
  """The metadata.json fields that `synthetic.generate(**data)` would write."""
  args = dict(seed=0, resolution=32, num_frames=64, train_per_class=100,
              val_per_class=20, test_per_class=20, num_shards=4, classes=None,
              scene=synthetic.SceneConfig())
  args.update(data)
  per_class = dict(zip(synthetic.SPLITS, (args['train_per_class'], args['val_per_class'],
                                          args['test_per_class'])))
  return {
      'label_names': synthetic.resolve_classes(args['classes']),
      'resolution': args['resolution'], 'num_frames': args['num_frames'],
      'seed': args['seed'], 'clips_per_class': per_class,
      'scene': dataclasses.asdict(args['scene']),
      'tables': {s: f'{s}.tfrecord@{args["num_shards"]}' for s, n in per_class.items() if n},
      'generator_version': synthetic.GENERATOR_VERSION,
  }


def metadata_mismatch(data_dir: str, wanted: Dict[str, Any]) -> Optional[str]:
  """Why the data in `data_dir` is not the requested data; None when it is."""
  path = os.path.join(data_dir, 'metadata.json')
  if not os.path.exists(path):
    return f'{path} does not exist'
  with open(path) as f:
    found = json.load(f)
  differ = sorted(k for k, v in wanted.items() if found.get(k) != v)
  return f'{path} differs in {", ".join(differ)}' if differ else None


def prepare_data(workdir: str, settings: Settings) -> Tuple[str, bool]:
  """Generates WORKDIR/data unless it already holds the requested data.

  Returns:
    (data_dir, regenerated).
  """
  data_dir = os.path.join(workdir, 'data')
  why = metadata_mismatch(data_dir, requested_metadata(settings.data))
  if why is None:
    say(f'Reusing the dataset in {data_dir} (its metadata.json matches).')
    return data_dir, False
  say(f'Generating the synthetic dataset into {data_dir} ({why}); ~20 s.')
  # Stale shards of another generation (other shard count) would match the tables' glob.
  shutil.rmtree(data_dir, ignore_errors=True)
  summary = synthetic.generate(data_dir, **settings.data, progress=sys.stderr.isatty())
  say(f'Wrote {summary["num_classes"]} classes, {summary["splits"]} clips, in '
      f'{summary["seconds"]:.0f} s.')
  return data_dir, True


# ----------------------------------------------------------------------------------------
# Runs.
# ----------------------------------------------------------------------------------------

CACHE_DIR = 'cache'


def run_config(run: Run, workdir: str, data_dir: str, settings: Settings):
  """The run's experiment file, pointed at the demo's data (stage 2: at the stage-1
  run, and at the feature cache it trains from)."""
  overrides = [f'dataset.base_dir={data_dir}', *settings.overrides]
  if run.name == 'stage2':
    overrides += [f'init_from.checkpoint_path={os.path.join(workdir, "stage1")}',
                  f'feature_cache.dir={os.path.join(workdir, CACHE_DIR)}']
  return experiment_configs.load(run.experiment, overrides)


def prepare_cache(run: Run, workdir: str, data_dir: str, settings: Settings) -> Dict[str, Any]:
  """Extracts stage 2's frozen features from the stage-1 run (or reuses them)."""
  config = run_config(run, workdir, data_dir, settings)
  say(f'cache: the frozen part of {run.name}, {settings.views} views per training clip, '
      f'into {config.feature_cache.dir}.')
  result = study_runs.ensure_cache(config, config.feature_cache.dir, views=settings.views,
                                   log=say)
  say(f'cache: {"reused" if result["reused"] else "done"}, {result["seconds"]:.0f} s of '
      'extraction.')
  return result


def run_one(run: Run, workdir: str, data_dir: str, settings: Settings) -> Dict[str, Any]:
  """Trains one run (or reuses it, by `studies.runs`'s rule); returns its summary."""
  run_dir = os.path.join(workdir, run.name)
  config = run_config(run, workdir, data_dir, settings)
  summary = study_runs.reusable_summary(config, run_dir)
  if summary is not None:
    say(f'{run.name}: reusing the finished run in {run_dir} (delete it to rerun).')
    return dict(summary, reused=True)
  steps = config.num_training_steps or f'{config.num_training_epochs:g} epochs of'
  say(f'{run.name}: starting {run.label}, {config.dataset.num_frames} frames, {steps} '
      f'steps, in {run_dir}; expected ~{_minutes(run.expected_s)} on a 2-core CPU.')
  start = time.time()
  summary = study_runs.train_from_scratch(config, run_dir, log=say)
  say(f'{run.name}: done in {time.time() - start:.0f} s, eval top-1 '
      f'{summary["eval"]["top1"]:.3f}.')
  return dict(summary, reused=False)


def _minutes(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


# ----------------------------------------------------------------------------------------
# Results.
# ----------------------------------------------------------------------------------------

def extraction_row(extraction: Dict[str, Any], stage2: Dict[str, Any]) -> Dict[str, Any]:
  """The feature extraction as a row of the table: its time, nothing trained."""
  return {'run': 'extraction', 'label': f'feature extraction ({extraction["views"]} views)',
          'frames': stage2['frames'], 'trainable_params': 0,
          'frozen_params': stage2['frozen_params'], 'step_memory_mib': None,
          'train_time_s': extraction['seconds'], 'steps': None, 'eval_top1': None,
          'eval_top5': None, 'test_top1': None, 'test_top5': None,
          'reused': extraction['reused']}


def result_row(run: Run, summary: Dict[str, Any]) -> Dict[str, Any]:
  """The figures the table shows for one run, from its summary.json."""
  test = summary.get('test') or {}
  return {
      'run': run.name, 'label': run.label,
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


def compare(rows: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
  """Stage 1 + extraction + stage 2 against the baseline: total time and top-1.

  The accuracy compared is test top-1 (multi-view) when the test split exists, else
  eval top-1: the two-stage model is the stage-2 model.
  """
  s1, s2, base = rows['stage1'], rows['stage2'], rows['baseline']
  metric = 'test_top1' if base['test_top1'] is not None else 'eval_top1'
  extraction = rows['extraction']['train_time_s'] if 'extraction' in rows else 0.0
  two_stage_time = s1['train_time_s'] + extraction + s2['train_time_s']
  return {
      'metric': metric,
      'two_stage_top1': s2[metric], 'baseline_top1': base[metric],
      'two_stage_eval_top1': s2['eval_top1'], 'baseline_eval_top1': base['eval_top1'],
      'two_stage_train_time_s': two_stage_time, 'extraction_time_s': extraction,
      'baseline_train_time_s': base['train_time_s'],
      'time_ratio': two_stage_time / max(base['train_time_s'], 1e-9),
      'reaches_baseline_top1': s2[metric] >= base[metric],
      'less_time': two_stage_time < base['train_time_s'],
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
        f'{r["train_time_s"]:.0f} | {_num(r["steps"], "d")} | {_pct(r["eval_top1"])} | {_pct(r["eval_top5"])} | '
        f'{_pct(r["test_top1"])} | {_pct(r["test_top5"])} |')
  return '\n'.join(lines)


def comparison_line(c: Dict[str, Any]) -> str:
  which = 'test' if c['metric'] == 'test_top1' else 'eval'
  verdict = 'reaches' if c['reaches_baseline_top1'] else 'does NOT reach'
  return (
      f'stage 1 + extraction + stage 2: {c["two_stage_train_time_s"]:.0f} s '
      f'({c["time_ratio"]:.2f}x the baseline\'s {c["baseline_train_time_s"]:.0f} s), '
      f'{which} top-1 {_pct(c["two_stage_top1"])}% vs the baseline\'s '
      f'{_pct(c["baseline_top1"])}% (eval top-1 {_pct(c["two_stage_eval_top1"])}% vs '
      f'{_pct(c["baseline_eval_top1"])}%): the two-stage run {verdict} the baseline\'s '
      f'{which} top-1.')


def write_results(workdir: str, rows, comparison, extra: Dict[str, Any]) -> str:
  """Writes results.md and results.json; returns the markdown."""
  text = (f'{markdown_table(rows)}\n\n{comparison_line(comparison)}\n\n'
          'Percentages; train time excludes compilation, evaluation and checkpoint '
          'writes (the extraction row: reading, decoding, the frozen forward pass and '
          'writing the cache, compilation excluded); step memory is the compiled train '
          'step\'s (XLA memory analysis).\n')
  with open(os.path.join(workdir, RESULTS_MD), 'w') as f:
    f.write(text)
  with open(os.path.join(workdir, RESULTS_JSON), 'w') as f:
    json.dump({'runs': {r['run']: r for r in rows}, 'comparison': comparison, **extra},
              f, indent=2, sort_keys=True)
  return text


# ----------------------------------------------------------------------------------------
# The demo.
# ----------------------------------------------------------------------------------------

def run_demo(workdir: str, settings: Settings) -> Dict[str, Any]:
  """Data, the three runs and the results; returns what results.json holds."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  data_dir, regenerated = prepare_data(workdir, settings)
  if regenerated:
    _drop_stale_runs(workdir, settings.runs)
  summaries, extraction = {}, None
  for run in settings.runs:
    if run.name == 'stage2':  # its frozen part, once per stored view
      extraction = prepare_cache(run, workdir, data_dir, settings)
    summaries[run.name] = run_one(run, workdir, data_dir, settings)
  rows = [result_row(run, summaries[run.name]) for run in settings.runs]
  if extraction is not None:
    stage2 = next(i for i, r in enumerate(rows) if r['run'] == 'stage2')
    rows.insert(stage2, extraction_row(extraction, rows[stage2]))
  comparison = compare({r['run']: r for r in rows})
  extra = {'demo_wall_time_s': time.time() - start, 'data_dir': data_dir,
           'data': requested_metadata(settings.data), 'overrides': list(settings.overrides)}
  text = write_results(workdir, rows, comparison, extra)
  print('\n' + text, flush=True)
  say(f'Total wall time {_minutes(extra["demo_wall_time_s"])}; results in '
      f'{os.path.join(workdir, RESULTS_MD)} and {RESULTS_JSON}.')
  with open(os.path.join(workdir, RESULTS_JSON)) as f:
    return json.load(f)


def _drop_stale_runs(workdir: str, runs: Sequence[Run]) -> None:
  """Runs trained on a previous dataset: their configs name the same data folder, so
  they would otherwise be reused."""
  for run in [*runs, Run(CACHE_DIR, '', 'feature cache', 0)]:
    run_dir = os.path.join(workdir, run.name)
    if os.path.exists(run_dir):
      say(f'The dataset changed: removing the stale run {run_dir}.')
      shutil.rmtree(run_dir)
