r"""The paper's ablation, tuned fairly, on the 32-px miniature (or an existing dataset).

  python -m vivit_adapter.ablation --workdir=runs/ablation --out=docs/ablation \
      [--seeds=0,1,2] [--rows=baseline,I,III,V,...] [--data=DIR | --dataset_dir=DIR] \
      [--image_checkpoint=PATH.npz] [--benchmark_json=OUT.json] [--quick] [--report_only]
      [--plan_only [--step_seconds=baseline=0.74,stage1=0.116,stage2=0.156]]

The program: flags, then `vivit_adapter.studies.ablation.run.run_ablation`; the sweep,
the rows, the caches and the reuse rule are described in
`vivit_adapter/studies/ablation/__init__.py`.
"""

import argparse
import sys
from typing import Dict, Optional, Sequence

from data_pipelines import cli


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='one sub-folder per seed and run')
  parser.add_argument('--out', required=True, help='output prefix, e.g. docs/ablation')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds')
  parser.add_argument('--rows', default='', help='comma-separated row names (default all); '
                      'the sweep runs what they need')
  parser.add_argument('--data', default='', help='the synthetic dataset (default '
                      '<workdir>/data, generated when missing)')
  parser.add_argument('--dataset_dir', default='', help='an existing DMVR dataset instead '
                      '(train.tfrecord@*, label_map.txt; validation/test tables optional)')
  parser.add_argument('--image_checkpoint', default='', help='image ViT .npz the spatial '
                      'encoder starts from (default: pretrained by the study)')
  parser.add_argument('--benchmark_json', default='', help='OUT.json of python -m '
                      'vivit_adapter.benchmark: the compute-only step ratios in the report')
  parser.add_argument('--enlarged_test_per_class', type=int, default=0,
                      help='test each row\'s final models once more on this many test '
                      'clips per class from the study\'s generator (synthetic data only; '
                      'evaluation only; 0: no enlarged split)')
  parser.add_argument('--quick', action='store_true', help='tiny model, data and steps')
  parser.add_argument('--report_only', action='store_true',
                      help='generate and train nothing: write the tables from the '
                      'finished runs (with none in --workdir: from the last <out>.json; '
                      'with neither: an error)')
  parser.add_argument('--plan_only', action='store_true',
                      help='print the runs the study would train, their steps and an '
                      'estimate of their training time, then stop (nothing generated or '
                      'trained)')
  parser.add_argument('--step_seconds', default='', help='with --plan_only: seconds per '
                      'step, e.g. baseline=0.74,stage1=0.116,stage2=0.156 (the default: '
                      'the 32-px miniature on a 2-core CPU, batch 32)')
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  if args.data and args.dataset_dir:
    parser.error('--data (synthetic) and --dataset_dir (existing) exclude each other.')
  if args.enlarged_test_per_class and args.dataset_dir:
    parser.error('--enlarged_test_per_class generates more test clips of the study\'s own '
                 'synthetic data; with --dataset_dir, enlarge that dataset\'s test split '
                 'instead.')
  if args.enlarged_test_per_class < 0:
    parser.error(f'--enlarged_test_per_class={args.enlarged_test_per_class}: a number of '
                 'clips per class (0: none).')
  return args


def main(argv: Optional[Sequence[str]] = None) -> Dict:
  args = parse_args(argv)
  if args.plan_only:
    return plan_only(args)
  # TensorFlow and JAX load here, not with the module: --help answers without them.
  # pylint: disable=g-import-not-at-top
  from data_pipelines import tf_runtime
  from vivit_adapter.studies.ablation import run
  # pylint: enable=g-import-not-at-top
  tf_runtime.configure()  # before any tf.data pipeline: TensorFlow leaves GPUs to JAX
  cli.set_verbosity(args.verbosity)
  cli.quiet_library_logs()
  # The command that completes the table: --report_only would train nothing.
  command = 'python -m vivit_adapter.ablation ' + ' '.join(
      a for a in (sys.argv[1:] if argv is None else argv) if a != '--report_only')
  return run.run_ablation(
      workdir=args.workdir, out=args.out,
      seeds=[int(s) for s in args.seeds.split(',') if s.strip()],
      row_names=[r for r in args.rows.split(',') if r], data_dir=args.data,
      dataset_dir=args.dataset_dir, image_checkpoint=args.image_checkpoint,
      benchmark_json=args.benchmark_json, quick=args.quick, train=not args.report_only,
      command=command, enlarged_test_per_class=args.enlarged_test_per_class)


def plan_only(args: argparse.Namespace) -> Dict:
  """Prints the study's runs and their estimated training time; returns the estimate."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter.studies.ablation import cost
  from vivit_adapter.studies.ablation import plan as ablation_plan
  # pylint: enable=g-import-not-at-top
  study = ablation_plan.Study(args.workdir, args.data or args.dataset_dir or 'DATA')
  width = ablation_plan.experiment_config('baseline', study, args.quick).model.adapter.hidden_size
  plan = ablation_plan.make_plan(args.quick, width)
  names = ablation_plan.select_row_names(plan, [r for r in args.rows.split(',') if r])
  seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  estimate = cost.estimate(plan, seeds, names, cost.parse_step_seconds(args.step_seconds))
  print(cost.plan_text(estimate, plan))
  return estimate


def _main() -> None:
  with cli.usage_errors():  # unknown rows, a finished run of another config: one line
    main()


if __name__ == '__main__':
  cli.start()
  sys.exit(cli.run(_main))
