"""Running the ablation: the data, the image checkpoint, then each row's runs, seed by seed.

Each run is reused or trained by `studies.runs`'s rule; `run_ablation` is the whole
study, from the data to docs/ablation.{json,md,png} (`write_outputs`).
"""

import json
import os
import time
from typing import Dict, List, Optional, Sequence

import ml_collections

from vivit_adapter.studies import runs as study_runs
from vivit_adapter.studies.ablation import markdown as ablation_markdown
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import plots
from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation.plan import Plan, Row, Run

IMAGE_CHECKPOINT = 'vit_image.npz'


def ensure_data(data_dir: str, quick: bool) -> None:
  """Generates the synthetic dataset if absent: the demo's (the one recipes.synthetic is
  tuned for), or a tiny one with quick."""
  if os.path.exists(os.path.join(data_dir, 'metadata.json')):
    return
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from vivit_adapter.studies import demo  # pylint: disable=g-import-not-at-top
  sizes = (dict(resolution=32, num_frames=16, train_per_class=4, val_per_class=1,
                test_per_class=1, classes=list(synthetic.ACTION_NAMES[:6]), num_shards=2)
           if quick else demo.FULL.data)
  print(f'Generating the synthetic dataset in {data_dir} ...', flush=True)
  synthetic.generate(data_dir, progress=False, **sizes)


def ensure_image_checkpoint(workdir: str, data_dir: str, quick: bool) -> Dict:
  """Pretrains the image ViT once (the ImageNet stand-in) and returns its report."""
  from vivit_adapter.studies import image_pretrain  # pylint: disable=g-import-not-at-top
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
  config = ablation_plan.experiment_config('stage1', data_dir, quick)
  return image_pretrain.pretrain(path, config, data_dir=data_dir, settings=settings)


def ensure_run(run: Run, config: ml_collections.ConfigDict, run_dir: str,
               train: bool = True) -> Optional[Dict]:
  """The run's summary: reused when it finished before, else trained now (or None).

  With train=False nothing is trained or deleted; a finished run of another config is
  then reported with a warning (so that a table can be written from what exists).
  """
  if train:
    summary = study_runs.reusable_summary(config, run_dir)
    return summary if summary is not None else _train(run, config, run_dir)
  summary = study_runs.finished_summary(run_dir)
  message = None if summary is None else study_runs.mismatch_message(config, run_dir, summary)
  if message:
    print(f'  WARNING: {message}', flush=True)
  return summary


def _train(run: Run, config: ml_collections.ConfigDict, run_dir: str) -> Dict:
  t = time.time()
  summary = study_runs.train_from_scratch(
      config, run_dir, log=lambda message: print(f'  {run.key}: {message}', flush=True))
  print(f'  {run.key}: test top-1 {summary["test"].get("top1", float("nan")):.3f}, '
        f'{summary["train_time_s"]:.1f}s training ({time.time() - t:.0f}s wall)', flush=True)
  return summary


def run_all(rows: List[Row], plan: Plan, seeds: Sequence[int], *, workdir: str,
            data_dir: str, image_checkpoint: str,
            train: bool = True) -> Dict[int, Dict[str, Dict]]:
  """{seed: {run key: summary}} for the runs the rows need, seed by seed.

  With train=False only finished runs are read (a report of what exists so far).
  """
  runs = ablation_plan.make_runs(plan)
  results = {}
  for seed in seeds:
    run_dirs = {k: os.path.join(workdir, f'seed{seed}', k) for k in runs}
    done = results.setdefault(seed, {})
    for row in rows:
      for key in row.runs:
        if key not in done:
          config = ablation_plan.run_config(runs[key], plan, seed=seed, data_dir=data_dir,
                                            image_checkpoint=image_checkpoint,
                                            run_dirs=run_dirs)
          summary = ensure_run(runs[key], config, run_dirs[key], train)
          if summary is not None:
            done[key] = summary
  return results


def run_ablation(*, workdir: str, out: str, seeds: Sequence[int], row_names: Sequence[str],
                 data_dir: str, quick: bool, train: bool, command: str) -> Dict:
  """The whole study: data, plan, image checkpoint, runs; writes and returns the report."""
  started = ablation_report.machine_info()
  data_dir = data_dir or os.path.join(workdir, 'data')
  ensure_data(data_dir, quick)
  plan = ablation_plan.make_plan(data_dir, quick)
  rows = ablation_plan.select_rows(ablation_plan.make_rows(plan), row_names)
  image_report = ensure_image_checkpoint(workdir, data_dir, quick)
  results = run_all(rows, plan, seeds, workdir=workdir, data_dir=data_dir,
                    image_checkpoint=os.path.join(workdir, IMAGE_CHECKPOINT), train=train)
  report = ablation_report.build_report(rows, plan, seeds, results,
                                        image_report=image_report, data_dir=data_dir,
                                        command=command, started=started)
  for path in write_outputs(report, out):
    print(f'Wrote {path}')
  return report


def write_outputs(report: Dict, out: str) -> List[str]:
  """Writes <out>.json, <out>.md, <out>.png and <out>_curves.png; returns their paths."""
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
  return paths
