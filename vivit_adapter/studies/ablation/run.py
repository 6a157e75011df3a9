"""Running the ablation: data, image checkpoint, the sweep, then each row's runs, seed by seed.

Each run is reused or trained by `studies.runs`'s rule, each feature cache reused or
extracted by `studies.runs.ensure_cache`; `run_ablation` is the whole study, from the
data to docs/ablation.{json,md,png} (`write_outputs`).
"""

import dataclasses
import glob
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections

from vivit_adapter.studies import runs as study_runs
from vivit_adapter.studies.ablation import data as study_data
from vivit_adapter.studies.ablation import markdown as ablation_markdown
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import plots
from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation import retest
from vivit_adapter.studies.ablation.plan import Plan, Run, Schedule, Study
from vivit_adapter.train_lib import reporting
from vivit_adapter.train_lib import run_lock

IMAGE_CHECKPOINT = 'vit_image.npz'


def prepare_data(workdir: str, data_dir: str, dataset_dir: str, quick: bool,
                 train: bool = True) -> study_data.StudyData:
  """--dataset_dir (an existing DMVR dataset), else the synthetic data (--data or
  <workdir>/data, generated when missing, but never with train=False)."""
  if dataset_dir:
    return study_data.prepare_existing(dataset_dir, workdir, generate=train)
  has_runs = bool(glob.glob(os.path.join(workdir, 'seed*')))
  return study_data.prepare_synthetic(
      data_dir or os.path.join(workdir, 'data'), ablation_plan.synthetic_data(quick),
      owned=not data_dir, has_runs=has_runs, generate=train)


def has_finished_runs(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, 'seed*', '*', reporting.SUMMARY_FILE)))


def ensure_image_checkpoint(workdir: str, data: study_data.StudyData, given: str,
                            quick: bool, train: bool) -> Dict:
  """The image ViT the baseline, stage 1 and rows I/III start from, and its report.

  --image_checkpoint when given; else pretrained once (the ImageNet stand-in): on
  synthetic images for the synthetic data, on single frames of the training videos
  labelled with the video's class for any other dataset.
  """
  if given:
    return {'output': given, 'task': 'given (--image_checkpoint)'}
  from vivit_adapter.studies import image_pretrain  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, IMAGE_CHECKPOINT)
  report_path = os.path.splitext(path)[0] + '.json'
  if os.path.exists(path) and os.path.exists(report_path):
    with open(report_path) as f:
      return json.load(f)
  if not train:
    return {'output': path, 'task': 'missing (not pretrained yet)'}
  task = 'position' if data.synthetic else image_pretrain.VIDEO_FRAMES
  settings = image_pretrain.PretrainSettings(task=task)
  if quick:
    settings = image_pretrain.PretrainSettings(task=task, steps=3, batch_size=8,
                                               num_train_images=16, num_eval_images=8)
  print(f'Pretraining the image ViT ({task}) -> {path} ...', flush=True)
  config = ablation_plan.experiment_config(
      'stage1', Study(workdir, data.base_dir, data.overrides), quick)
  return image_pretrain.pretrain(path, config, settings=settings,
                                 data_dir=data.base_dir if data.synthetic else '')


def ensure_run(run: Run, config: ml_collections.ConfigDict, run_dir: str,
               train: bool = True) -> Optional[Dict]:
  """The run's summary: reused when it finished before, else trained now (or None).

  With train=False nothing is trained or deleted; a finished run of another config is
  then reported with a warning (so that a table can be written from what exists). A
  run another live process is training (its lock held: a second study process on the
  same workdir) is skipped, None here: two processes share a study's runs that way.
  """
  if train:
    summary = study_runs.reusable_summary(config, run_dir)
    if summary is not None:
      return summary
    try:
      return _train(run, config, run_dir)
    except run_lock.InUse as e:
      print(f'  {run.key}: skipped here, another process is training it ({e}).', flush=True)
      return None
  summary = study_runs.finished_summary(run_dir)
  message = None if summary is None else study_runs.mismatch_message(config, run_dir, summary)
  if message:
    print(f'  WARNING: {message}', flush=True)
  return summary


def _train(run: Run, config: ml_collections.ConfigDict, run_dir: str) -> Dict:
  t = time.time()
  summary = study_runs.train_from_scratch(
      config, run_dir, log=lambda message: print(f'  {run.key}: {message}', flush=True))
  print(f'  {run.key}: eval top-1 {summary["eval"].get("top1", float("nan")):.3f}, '
        f'{summary["train_time_s"]:.1f}s training ({time.time() - t:.0f}s wall)', flush=True)
  return summary


class Runner:
  """Each run and feature cache of the study, reused or made once per process.

  A run waits for what it needs (its stage-1 run, its cache); with train=False only
  what finished is read, and a run whose inputs are missing is missing too.
  """

  def __init__(self, plan: Plan, study: Study, train: bool):
    self.plan, self.study, self.train = plan, study, train
    self.summaries: Dict[Tuple[int, str], Optional[Dict]] = {}
    self.caches: Dict[Tuple[int, str], Optional[Dict]] = {}

  def summary(self, run: Run, seed: int) -> Optional[Dict]:
    if (seed, run.key) not in self.summaries:
      self.summaries[seed, run.key] = self._ensure(run, seed)
    return self.summaries[seed, run.key]

  def _ensure(self, run: Run, seed: int) -> Optional[Dict]:
    if run.init is not None and self.summary(run.init, seed) is None:
      return None
    if run.cache and self.cache(run, seed) is None:
      return None
    config = self.run_config(run, seed)
    return ensure_run(run, config, self.study.run_dir(seed, run.key), self.train)

  # The three hooks another study (studies/frames.py) changes: a run's config, its
  # cache's config and the views the cache stores per training clip.
  def run_config(self, run: Run, seed: int) -> ml_collections.ConfigDict:
    return ablation_plan.run_config(run, self.plan, seed=seed, study=self.study)

  def cache_config(self, run: Run, seed: int) -> ml_collections.ConfigDict:
    return ablation_plan.cache_config(run, self.plan, seed=seed, study=self.study)

  def views(self, run: Run) -> int:  # pylint: disable=unused-argument
    return self.plan.views

  def cache(self, run: Run, seed: int) -> Optional[Dict]:
    """The extraction record of the cache `run` trains from (its time is the row's)."""
    if (seed, run.cache) not in self.caches:
      self.caches[seed, run.cache] = self._ensure_cache(run, seed)
    return self.caches[seed, run.cache]

  def _ensure_cache(self, run: Run, seed: int) -> Optional[Dict]:
    cache_dir = self.study.cache_dir(seed, run.cache)
    if not self.train:
      record = os.path.join(cache_dir, study_runs.EXTRACTION_FILE)
      if not os.path.exists(record):
        return None
      with open(record) as f:
        return json.load(f)
    config, views = self.cache_config(run, seed), self.views(run)
    print(f'  cache_{run.cache} (seed {seed}): {views} view(s) per training '
          'clip', flush=True)
    try:
      return study_runs.ensure_cache(
          config, cache_dir, views=views,
          log=lambda m: print(f'  cache_{run.cache}: {m}', flush=True))
    except run_lock.InUse as e:
      print(f'  cache_{run.cache}: skipped here, another process is making it ({e}).',
            flush=True)
      return None

  def results(self) -> Dict[int, Dict[str, Dict]]:
    """{seed: {'runs': {key: summary}, 'caches': {name: extraction record}}}."""
    out = {}
    for part, done in (('runs', self.summaries), ('caches', self.caches)):
      for (seed, key), value in done.items():
        if value is not None:
          out.setdefault(seed, {'runs': {}, 'caches': {}})[part][key] = value
    return out


def run_sweep(runner: Runner, routes: Sequence[str]):
  """Seed 0's grid of each route, in order; returns (tried, choice).

  tried: {route: [(Run, summary or None)]}, every configuration tried, the grid's and
  its extensions'; choice: {route: Schedule} for each route whose whole grid finished
  (a partial grid chooses nothing: it would not be the equal-budget search).
  """
  tried: Dict[str, List[Tuple[Run, Optional[Dict]]]] = {}
  choice: Dict[str, Schedule] = {}
  for route in routes:
    if route not in ('baseline', 'stage1') and 'stage1' not in choice:
      break  # stage 2's grids (the dial's too) train from the chosen stage 1
    tried[route], chosen = sweep_route(runner, route, choice)
    if chosen is not None:
      choice[route] = chosen
      print(f'Sweep {route}: chose {chosen.tag} (validation top-1).', flush=True)
  return tried, choice


def sweep_route(runner: Runner, route: str, choice: Dict[str, Schedule],
                make_runs: Optional[Callable[[Sequence[Schedule]], List[Run]]] = None,
                extended: Optional[bool] = None):
  """One route's grid, grown past an edge its choice sits on (`plan.extend`, at most
  MAX_EXTENSIONS times for EXTENDED_ROUTES); returns (tried, chosen or None).

  `make_runs` (schedules -> runs) and `extended` (whether the grid grows) default to
  the ablation's (`plan.sweep_runs`, route in EXTENDED_ROUTES); another study's routes
  pass their own.
  """
  plan, grid = runner.plan, runner.plan.grids[route]
  if make_runs is None:
    make_runs = lambda schedules: ablation_plan.sweep_runs(plan, route, choice, schedules)
  if extended is None:
    extended = route in ablation_plan.EXTENDED_ROUTES
  rounds = ablation_plan.MAX_EXTENSIONS if extended else 0
  tried, schedules, chosen = [], list(grid), None
  for extension in range(rounds + 1):
    runs = make_runs(schedules)
    tried += [(r, runner.summary(r, ablation_plan.SWEEP_SEED)) for r in runs]
    if any(s is None for _, s in tried):
      return tried, None
    chosen = ablation_plan.choose([(r.schedule, s['eval']['top1']) for r, s in tried])
    schedules = ablation_plan.extend(grid, [r.schedule for r, _ in tried], chosen)
    if not schedules or extension == rounds:
      break
    print(f'Sweep {route}: {chosen.tag} is at an edge of the grid; trying '
          f'{", ".join(s.tag for s in schedules)}.', flush=True)
  return tried, chosen


def run_ablation(*, workdir: str, out: str, seeds: Sequence[int], row_names: Sequence[str],
                 data_dir: str, quick: bool, train: bool, command: str,
                 dataset_dir: str = '', image_checkpoint: str = '',
                 benchmark_json: str = '', enlarged_test_per_class: int = 0) -> Dict:
  """The whole study: data, image checkpoint, sweep, rows; writes and returns the report.

  With train=False nothing is generated or trained: with no finished runs in `workdir`
  (a clean clone), the docs are rewritten from the last <out>.json (a change to the
  tables needs no rerun), and without one it is an error.

  Raises:
    ValueError: train=False and there is nothing to report from.
  """
  if not train and not has_finished_runs(workdir):
    if os.path.exists(out + '.json'):
      return rewrite_from_json(out, workdir)
    raise ValueError(f'--report_only: no finished runs in {workdir} and no {out}.json to '
                     f'rewrite the docs from. Run the study first: {command}')
  started = ablation_report.machine_info()
  data = prepare_data(workdir, data_dir, dataset_dir, quick, train)
  study = Study(workdir, data.base_dir, data.overrides)
  base_config = ablation_plan.experiment_config('baseline', study, quick)
  plan = ablation_plan.make_plan(quick, base_config.model.adapter.hidden_size)
  names = ablation_plan.select_row_names(plan, row_names)
  image = ensure_image_checkpoint(workdir, data, image_checkpoint, quick, train)
  runner = Runner(plan, dataclasses.replace(study, image_checkpoint=image['output']), train)
  tried, choice = run_sweep(runner, ablation_plan.routes_for(plan, names))
  rows = [r for r in ablation_plan.make_rows(plan, choice) if r.name in names]
  # Phase by phase (ablation_plan.PHASES), each seed by seed in table order, so that a
  # partial study is a table and the targets' rows finish first on every seed.
  for tables in ablation_plan.PHASES:
    for seed in seeds:
      for row in (r for r in rows if r.table in tables):
        for run in row.runs:
          runner.summary(run, seed)
  if enlarged_test_per_class:
    # The rows' final models, and the baseline's curve: its sweep runs at the chosen
    # learning rate (the front picture, plots.plot_front).
    curve = [run for run, _ in tried.get('baseline', [])
             if 'baseline' in choice and run.schedule.lr == choice['baseline'].lr]
    test_enlarged(runner, rows, seeds, ablation_plan.synthetic_data(quick),
                  enlarged_test_per_class, sweep_runs=curve)
  report = ablation_report.build_report(
      rows, plan, seeds, runner.results(), tried=tried, choice=choice, wanted=names,
      data=data, model=ablation_report.model_info(base_config), image_report=image,
      command=command, started=started,
      benchmark=ablation_report.read_benchmark(benchmark_json, plan))
  for path in write_outputs(report, out):
    print(f'Wrote {path}')
  return report


def test_enlarged(runner: Runner, rows, seeds: Sequence[int], generate_args: Dict,
                  per_class: int, sweep_runs: Sequence[Run] = ()) -> None:
  """Each finished row's final model, and each of `sweep_runs` (seed SWEEP_SEED),
  tested on the enlarged test split (retest), the result attached to its summary as
  'test_large' for the report."""
  test = retest.prepare_large_test(runner.study.workdir, generate_args, per_class,
                                   generate=runner.train)
  # The run whose model the row evaluates is its last; a run is tested once.
  wanted = [(seed, row.runs[-1]) for seed in seeds for row in rows]
  wanted += [(ablation_plan.SWEEP_SEED, run) for run in sweep_runs]
  for seed, last in dict.fromkeys(wanted):
    summary = runner.summaries.get((seed, last.key))
    if summary is None:
      continue
    run_dir = runner.study.run_dir(seed, last.key)
    result = retest.ensure_result(run_dir, test.base_dir, train=runner.train)
    if result is not None:
      summary['test_large'] = result
      print(f'  {last.key} (seed {seed}): test top-1 {100 * result["top1"]:.2f} on '
            f'{result["count"]:.0f} clips of {test.base_dir}', flush=True)


def rewrite_from_json(out: str, workdir: str) -> Dict:
  """<out>.md and the plots again from <out>.json (the notes of <out>.md kept)."""
  with open(out + '.json') as f:
    report = json.load(f)
  for row in report['rows']:  # JSON made the seeds strings; the plots look them up as ints
    row['per_seed'] = {int(seed): v for seed, v in row['per_seed'].items()}
  print(f'No runs in {workdir}: rewriting the docs from {out}.json.', flush=True)
  for path in write_outputs(report, out):
    print(f'Wrote {path}')
  return report


def write_outputs(report: Dict, out: str) -> List[str]:
  """Writes <out>.json, <out>.md, <out>.png, <out>_curves.png and <out>_front.png;
  returns their paths."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  paths = [out + '.json', out + '.md', out + '.png']
  with open(paths[0], 'w') as f:
    json.dump(report, f, indent=1)
  text = ablation_markdown.markdown(report, previous_path=paths[1])
  with open(paths[1], 'w') as f:
    f.write(text)
  plots.plot(report, paths[2])
  if plots.plot_time_to_accuracy(report, out + '_curves.png'):
    paths.append(out + '_curves.png')
  if plots.plot_front(report, out + '_front.png'):
    paths.append(out + '_front.png')
  return paths
