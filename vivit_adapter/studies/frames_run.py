"""The frames study's whole run (issue 31): data, image checkpoint, sweep, growth of the
steps past 32 frames, the rows on every seed, the report. `studies.frames` holds the
study's settings, plan and runner; `studies.frames_report` its numbers and docs.
"""

import dataclasses
import glob
import os
from typing import Dict, Sequence

from vivit_adapter.studies import frames as frames_plan
from vivit_adapter.studies import frames_report
from vivit_adapter.studies.ablation import data as study_data
from vivit_adapter.studies.ablation import plan as ablation_plan
from vivit_adapter.studies.ablation import report as ablation_report
from vivit_adapter.studies.ablation import run as ablation_run
from vivit_adapter.studies.ablation.plan import Study


def run_study(*, workdir: str, out: str, seeds: Sequence[int], frames: Sequence[int],
              dials: Sequence[int], data_dir: str, quick: bool, train: bool, command: str,
              baseline_dials: Sequence[int] = frames_plan.BASELINE_STAGE1_DIALS,
              image_checkpoint: str = '', benchmark_json: str = '',
              memory_jsons: Sequence[str] = ()) -> Dict:
  """Data, image checkpoint, sweep, growth, rows on every seed; writes the report."""
  if not train and not ablation_run.has_finished_runs(workdir):
    if os.path.exists(out + '.json'):  # a clean clone: the docs again from the last json
      return frames_report.rewrite_from_json(out, workdir)
    raise ValueError(f'--report_only: no finished runs in {workdir} and no {out}.json to '
                     f'rewrite the docs from. Run the study first: {command}')
  started = ablation_report.machine_info()
  data_args = frames_plan.synthetic_data(quick)
  data = study_data.prepare_synthetic(
      data_dir or os.path.join(workdir, 'data'), data_args, owned=not data_dir,
      has_runs=bool(glob.glob(os.path.join(workdir, 'seed*'))), generate=train)
  study = Study(workdir, data.base_dir, data.overrides)
  base_config = ablation_plan.experiment_config('baseline', study, quick)
  plan = frames_plan.make_plan(quick, base_config.model.adapter.hidden_size, frames, dials,
                               data_args['num_frames'], baseline_dials)
  image = ablation_run.ensure_image_checkpoint(workdir, data, image_checkpoint, quick, train)
  runner = frames_plan.FramesRunner(
      plan, dataclasses.replace(study, image_checkpoint=image['output']), train)
  tried, choice = frames_plan.run_sweep(runner)
  schedules, grown = frames_plan.frame_schedules(runner, choice, tried)
  rows = frames_plan.make_rows(plan, choice, schedules)
  seeded, restarts = {}, []
  for seed in seeds:  # seed by seed, frame count by frame count: a partial study reports
    seeded[seed], found = frames_plan.seed_rows(runner, choice, schedules, tried, seed,
                                                len(data_args['classes']))
    restarts += found
  report = frames_report.build_report(
      rows, plan, seeds, runner.results(), tried=tried, choice=choice, grown=grown,
      schedules=schedules, data=data, model=ablation_report.model_info(base_config),
      image_report=image, command=command, started=started, benchmark_json=benchmark_json,
      memory_jsons=memory_jsons, seeded=seeded, restarts=restarts)
  for path in frames_report.write_outputs(report, out):
    print(f'Wrote {path}')
  return report
