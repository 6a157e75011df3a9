r"""`make demo`: the synthetic dataset, the two-stage route and the baseline at equal
accuracy, one table and one picture.

  python -m vivit_adapter.demo --workdir=runs/demo [--quick]   (vivit_adapter/demo.py)

1. Generates the embedded synthetic action dataset into WORKDIR/data (kept, and
   reused while its metadata.json matches what the demo asks for): the ablation's data
   (docs/ablation.md), 12 classes, 150 training clips per class.
2. Pretrains the image ViT both routes start from, the ablation's ImageNet stand-in
   (`studies.image_pretrain`), into WORKDIR/vit_image.npz; shared, counted in neither.
3. Runs the experiment files, in process, each in its own workdir, with the settings
   the ablation's sweep chose (RUNS; tests/test_demo.py checks them against
   docs/ablation.json):
   experiments/synthetic_stage1.py  -> WORKDIR/stage1    (8 frames, end to end)
   feature extraction               -> WORKDIR/cache     (the frozen part of stage 2,
                                       once per clip)
   experiments/synthetic_stage2.py  -> WORKDIR/stage2    (32 frames, frozen spatial
                                       + the mlp adapter, initialised from
                                       WORKDIR/stage1, trained from WORKDIR/cache)
   experiments/synthetic_baseline.py -> WORKDIR/baseline (32 frames, end to end, up to
                                       BASELINE_CAP_STEPS)
   A run that finished with the same config is reused, so a second `make demo` after
   an interruption only does what is left; an interrupted run starts again from
   scratch, so that its training time is whole (the rule of `studies.runs`).
4. Prints and writes (WORKDIR/results.md, results.json, time_to_accuracy.png) both
   routes' time to the two-stage route's eval top-1, the baseline's eval top-1 at the
   two-stage route's total time, what the full study found, and the runs' table
   (`studies.demo_results`).

Why these settings: the study's best recipe trains stage 1 4x longer (1800 steps, ~4 min
compute-only), and its baseline needs 1200-1550 steps (12-15 min) to its level; in a
10-minute demo stage 1 trains the sweep's chosen 450 steps (row adapter_mlp of
docs/ablation.md, 91.5 ± 2.8 test top-1 against the 4x row's 92.6 ± 0.5) and the baseline
has what is left. `--quick` shrinks data, model and steps to a smoke test of the whole
path.
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from data_pipelines import synthetic
from vivit_adapter.studies import demo_results
from vivit_adapter.studies import experiment_configs
from vivit_adapter.studies import runs as study_runs
from vivit_adapter.studies.pretrain_settings import PretrainSettings

RESULTS_MD, RESULTS_JSON = demo_results.RESULTS_MD, demo_results.RESULTS_JSON
IMAGE_CHECKPOINT, IMAGE_REPORT = 'vit_image.npz', 'vit_image.json'  # as pretrain writes them


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # also the run's folder under WORKDIR
  experiment: str  # experiments/<experiment>.py, as a module name
  label: str  # what the table calls it
  expected_s: int  # wall time on a quiet 2-core CPU, for the progress line
  overrides: Tuple[str, ...] = ()  # 'key=value': the run's schedule


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the demo generates and runs."""
  data: Dict[str, Any]  # keyword arguments of synthetic.generate
  overrides: Tuple[str, ...] = ()  # 'key=value' for all runs, after each run's own
  runs: Tuple[Run, ...] = ()
  views: int = 1  # training views per clip in stage 2's feature cache
  pretrain: PretrainSettings = dataclasses.field(default_factory=PretrainSettings)


def _schedule(lr: float, steps: int, warmup: int, eval_every: int) -> Tuple[str, ...]:
  # One checkpoint, at the end: an interrupted demo run restarts from scratch anyway
  # (studies.runs), and the trainer's clock counts checkpoint writes as training time.
  return (f'lr_configs.base_learning_rate={lr}', f'num_training_steps={steps}',
          f'lr_configs.warmup_steps={warmup}', f'log_eval_steps={eval_every}',
          f'checkpoint_steps={steps}')


# The ablation's choices (docs/ablation.md, "Sweep", chosen on the validation split):
# stage 1 lr 1e-3, 450 steps; stage 2 lr 3e-3, 1200 steps, with the mlp adapter (the
# best adapter type, and a sixth of the attention adapter's step from the cache); the
# baseline lr 1e-3; warm-up 50 steps, cosine decay, throughout. The baseline's cosine
# decays over the cap, as each sweep run's decays over its own length: at the cap it is
# annealed, its best at that budget. Evaluations every 50 steps as in the ablation, the
# baseline's every 25 (~15 s), to read its curve at the two-stage route's total time.
BASELINE_CAP_STEPS = 400
STAGE1 = _schedule(1e-3, 450, 50, 50)
STAGE2 = ('model.adapter.type=mlp', *_schedule(3e-3, 1200, 50, 50))
BASELINE = _schedule(1e-3, BASELINE_CAP_STEPS, 50, 25)
RUNS = (
    Run('stage1', 'synthetic_stage1', 'stage 1 (end to end)', 90,
        ('init_from.checkpoint_format=vit_npz', *STAGE1)),
    Run('stage2', 'synthetic_stage2', 'stage 2 (frozen spatial + mlp adapter)', 40, STAGE2),
    Run('baseline', 'synthetic_baseline', 'baseline (end to end)', 330,
        ('init_from.checkpoint_format=vit_npz', *BASELINE)),
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
        'lr_configs.warmup_steps=1', 'log_summary_steps=1', 'log_eval_steps=1',
        'num_training_epochs=1.0'),
    runs=tuple(dataclasses.replace(r, expected_s=20) for r in RUNS),
    pretrain=PretrainSettings(steps=3, batch_size=8, num_train_images=16,
                              num_eval_images=8))


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


def prepare_image_checkpoint(workdir: str, data_dir: str, settings: Settings) -> Dict[str, Any]:
  """The image ViT both routes start from (the ablation's ImageNet stand-in, the same
  task and settings), pretrained once into WORKDIR/vit_image.npz; returns its report."""
  from vivit_adapter.studies import image_pretrain  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, IMAGE_CHECKPOINT)
  report_path = os.path.join(workdir, IMAGE_REPORT)
  if os.path.exists(path) and os.path.exists(report_path):
    say(f'Reusing the image checkpoint {path}.')
    with open(report_path) as f:
      return json.load(f)
  say(f'Pretraining the image ViT both routes start from ({settings.pretrain.task} task, '
      f'{settings.pretrain.steps} steps) into {path}; ~1 min.')
  # Its sizes are the spatial encoder's: stage 1's config, on the demo's data and model.
  config = experiment_configs.load(RUNS[0].experiment,
                                   [f'dataset.base_dir={data_dir}', *settings.overrides])
  report = image_pretrain.pretrain(path, config, data_dir=data_dir, settings=settings.pretrain)
  say(f'Image checkpoint: held-out top-1 {100 * report["eval_top1"]:.1f}% '
      f'({report["train_time_s"]:.0f} s of training).')
  return report


def run_config(run: Run, workdir: str, data_dir: str, settings: Settings):
  """The run's experiment file with the demo's schedule, pointed at the demo's data and
  start (the image checkpoint; stage 2: the stage-1 run, and the feature cache it
  trains from)."""
  overrides = [f'dataset.base_dir={data_dir}', *run.overrides, *settings.overrides]
  if run.name == 'stage2':
    overrides += [f'init_from.checkpoint_path={os.path.join(workdir, "stage1")}',
                  f'feature_cache.dir={os.path.join(workdir, CACHE_DIR)}']
  else:
    overrides.append(f'init_from.checkpoint_path={os.path.join(workdir, IMAGE_CHECKPOINT)}')
  return experiment_configs.load(run.experiment, overrides)


def prepare_cache(run: Run, workdir: str, data_dir: str, settings: Settings) -> Dict[str, Any]:
  """Extracts stage 2's frozen features from the stage-1 run (or reuses them)."""
  config = run_config(run, workdir, data_dir, settings)
  say(f'cache: the frozen part of {run.name}, {settings.views} view(s) per training clip, '
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
  say(f'{run.name}: starting {run.label}, {config.dataset.num_frames} frames, '
      f'{config.num_training_steps} steps, in {run_dir}; expected '
      f'~{_minutes(run.expected_s)} on a quiet 2-core CPU.')
  start = time.time()
  summary = study_runs.train_from_scratch(config, run_dir, log=say)
  say(f'{run.name}: done in {time.time() - start:.0f} s, eval top-1 '
      f'{summary["eval"]["top1"]:.3f}.')
  return dict(summary, reused=False)


def _minutes(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


def route_descriptions(summaries: Dict[str, Dict[str, Any]], views: int) -> Dict[str, str]:
  """What each route trains, from the runs' saved configs, for the comparison table."""
  def cfg(name):
    return summaries[name]['config']

  def schedule(name):
    c = cfg(name)
    return (f'{summaries[name]["step"]} steps at lr {c["lr_configs"]["base_learning_rate"]:g}')
  s1, s2, base = cfg('stage1'), cfg('stage2'), cfg('baseline')
  return {
      'two_stage': (f'stage 1 end to end on {s1["dataset"]["num_frames"]} frames, '
                    f'{schedule("stage1")}; the frozen features cached once ({views} view); '
                    f'stage 2 on {s2["dataset"]["num_frames"]} frames, the '
                    f'{s2["model"]["adapter"]["type"]} adapter + temporal encoder + head '
                    f'from the cache, {schedule("stage2")}'),
      'baseline': (f'end to end on {base["dataset"]["num_frames"]} frames, '
                   f'{schedule("baseline")} (the cap; cosine decay over it)')}


# ----------------------------------------------------------------------------------------
# The demo.
# ----------------------------------------------------------------------------------------

def run_demo(workdir: str, settings: Settings) -> Dict[str, Any]:
  """Data, the image checkpoint, the runs and the results; returns what results.json
  holds."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  data_dir, regenerated = prepare_data(workdir, settings)
  if regenerated:
    _drop_stale_runs(workdir, settings.runs)
  image = prepare_image_checkpoint(workdir, data_dir, settings)
  summaries, extraction = {}, None
  for run in settings.runs:
    if run.name == 'stage2':  # its frozen part, once per stored view
      extraction = prepare_cache(run, workdir, data_dir, settings)
    summaries[run.name] = run_one(run, workdir, data_dir, settings)
  rows = [demo_results.result_row(run.name, run.label, summaries[run.name])
          for run in settings.runs]
  stage2 = next(i for i, r in enumerate(rows) if r['run'] == 'stage2')
  rows.insert(stage2, demo_results.extraction_row(extraction, rows[stage2]))
  comparison = demo_results.compare(summaries['stage1'], extraction, summaries['stage2'],
                                    summaries['baseline'])
  demo_results.plot(os.path.join(workdir, demo_results.CURVES_PNG), summaries['stage1'],
                    extraction, summaries['stage2'], summaries['baseline'], comparison)
  routes = route_descriptions(summaries, settings.views)
  extra = {'demo_wall_time_s': time.time() - start, 'data_dir': data_dir,
           'data': requested_metadata(settings.data), 'overrides': list(settings.overrides),
           'image_checkpoint': image,
           'curves': {n: summaries[n]['eval_curve'] for n in ('stage1', 'stage2', 'baseline')}}
  text = demo_results.write_results(workdir, rows, comparison, routes, extra)
  print('\n' + text, flush=True)
  say(f'Total wall time {_minutes(extra["demo_wall_time_s"])}; results in '
      f'{os.path.join(workdir, RESULTS_MD)}, {RESULTS_JSON} and {demo_results.CURVES_PNG}.')
  with open(os.path.join(workdir, RESULTS_JSON)) as f:
    return json.load(f)


def _drop_stale_runs(workdir: str, runs: Sequence[Run]) -> None:
  """Runs trained on a previous dataset: their configs name the same data folder, so
  they would otherwise be reused; and the image checkpoint made from its world."""
  for name in [r.name for r in runs] + [CACHE_DIR, IMAGE_CHECKPOINT, IMAGE_REPORT]:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      say(f'The dataset changed: removing the stale run {path}.')
      shutil.rmtree(path)
    elif os.path.exists(path):
      say(f'The dataset changed: removing the stale {path}.')
      os.remove(path)
