r"""The baseline against the two-stage recipe at 32, 64 and 128 frames (issue 31).

  python -m vivit_adapter.frames_study --workdir=runs/frames --out=docs/frames \
      [--seeds=0,1,2] [--frames=32,64,128] [--dials=0,1] [--baseline_dials=0] [--data=DIR]
      [--image_checkpoint=PATH.npz] [--benchmark_json=OUT.json] [--memory_json=A.json,...]
      [--quick]
      [--report_only] [--plan_only [--step_seconds=baseline=0.58,...]]

The program: flags, then `vivit_adapter.studies.frames_run.run_study`; the data, the sweep,
the steps at each frame count and the rows are described in
`vivit_adapter/studies/frames.py`.
"""

import argparse
import sys
from typing import Dict, List, Optional, Sequence

from data_pipelines import cli


def _ints(text: str) -> List[int]:
  return [int(s) for s in text.split(',') if s.strip()]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='one sub-folder per seed and run')
  parser.add_argument('--out', required=True, help='output prefix, e.g. docs/frames')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds')
  parser.add_argument('--frames', default='', help='frame counts (default 32,64,128; '
                      'the sweep\'s 32 must be one of them)')
  parser.add_argument('--dials', default='0,1', help='the recipe\'s stage 2 at each '
                      'config.model.trainable_spatial_layers k (0: the paper\'s)')
  parser.add_argument('--baseline_dials', default='0', help='the recipe whose stage 1 is '
                      'the baseline\'s 32-frame run, at these k (empty: none)')
  parser.add_argument('--data', default='', help='the long_events dataset (default '
                      '<workdir>/data, generated when missing)')
  parser.add_argument('--image_checkpoint', default='', help='image ViT .npz the spatial '
                      'encoder starts from (default: pretrained by the study)')
  parser.add_argument('--benchmark_json', default='', help='OUT.json of python -m '
                      'vivit_adapter.benchmark at every frame count: the compute-only clock '
                      '(and, with --plan_only, the step prices)')
  parser.add_argument('--memory_json', default='', help='comma-separated OUT.json files of '
                      'python -m vivit_adapter.benchmark (e.g. ViViT-B, compile-only) whose '
                      'memory at the study\'s frame counts the report tables')
  parser.add_argument('--quick', action='store_true', help='tiny model, data and steps')
  parser.add_argument('--report_only', action='store_true',
                      help='train nothing: write the docs from the finished runs')
  parser.add_argument('--plan_only', action='store_true',
                      help='print the runs and an estimate of their training time, then '
                      'stop (nothing generated or trained)')
  parser.add_argument('--step_seconds', default='', help='with --plan_only: seconds per '
                      'step at 32 frames, e.g. baseline=0.58,stage1=0.135,stage2_k0=0.0145')
  cli.add_verbosity_flag(parser)
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
  args = parse_args(argv)
  if args.plan_only:
    return plan_only(args)
  # pylint: disable=g-import-not-at-top
  from data_pipelines import tf_runtime
  from vivit_adapter.studies import frames_run
  # pylint: enable=g-import-not-at-top
  tf_runtime.configure()
  cli.set_verbosity(args.verbosity)
  cli.quiet_library_logs()
  command = 'python -m vivit_adapter.frames_study ' + ' '.join(
      a for a in (sys.argv[1:] if argv is None else argv) if a != '--report_only')
  return frames_run.run_study(
      workdir=args.workdir, out=args.out, seeds=_ints(args.seeds),
      frames=_ints(args.frames), dials=_ints(args.dials),
      baseline_dials=_ints(args.baseline_dials), data_dir=args.data,
      quick=args.quick, train=not args.report_only, command=command,
      image_checkpoint=args.image_checkpoint, benchmark_json=args.benchmark_json,
      memory_jsons=[p for p in args.memory_json.split(',') if p])


def plan_only(args: argparse.Namespace) -> Dict:
  """Prints the study's runs and their estimated training time; returns the estimate."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter.studies import frames
  from vivit_adapter.studies import frames_cost
  from vivit_adapter.studies.ablation import plan as ablation_plan
  # pylint: enable=g-import-not-at-top
  study = ablation_plan.Study(args.workdir, args.data or 'DATA')
  width = ablation_plan.experiment_config('baseline', study, args.quick).model.adapter.hidden_size
  plan = frames.make_plan(args.quick, width, _ints(args.frames), _ints(args.dials),
                          baseline_dials=_ints(args.baseline_dials))
  data = frames.synthetic_data(args.quick)
  clips = len(data['classes']) * (data['train_per_class'] + data['val_per_class'] +
                                  data['test_per_class'])
  per_step = frames_cost.parse_step_seconds(args.step_seconds)
  if args.benchmark_json:
    per_step = frames_cost.benchmark_step_seconds(args.benchmark_json, plan, per_step)
  estimate = frames_cost.estimate(plan, _ints(args.seeds), per_step, clips)
  print(frames_cost.plan_text(estimate, plan))
  return estimate


def _main() -> None:
  with cli.usage_errors():
    main()


if __name__ == '__main__':
  cli.start()
  sys.exit(cli.run(_main))
