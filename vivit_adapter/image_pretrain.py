r"""A small image-pretraining step: the stand-in for the ImageNet ViT checkpoint.

  python -m vivit_adapter.image_pretrain --output=runs/ablation/vit_image.npz \
      [--data=data/synthetic] [--steps=400] [--config=experiments/synthetic_stage1.py]

The program: flags, then `vivit_adapter.studies.image_pretrain.pretrain`, whose module
docstring says what the image task is and what is written.
"""

import argparse
import dataclasses
import sys
from typing import Dict, Optional, Sequence

import ml_collections

from data_pipelines import cli
from vivit_adapter import config_loading
from vivit_adapter.studies import experiment_configs
from vivit_adapter.studies import pretrain_settings


# The settings that count something, or scale every update: zero or less trains nothing.
_POSITIVE = ('steps', 'batch_size', 'learning_rate', 'num_train_images', 'num_eval_images')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', required=True, help='the .npz to write')
  parser.add_argument('--data', default='', help='synthetic dataset dir (its metadata.json)')
  parser.add_argument('--config', default='', help='experiment file whose config.model '
                      'fixes the ViT sizes (default: experiments/'
                      f'{pretrain_settings.DEFAULT_EXPERIMENT}.py)')
  for field in dataclasses.fields(pretrain_settings.PretrainSettings):
    parser.add_argument(f'--{field.name}', type=field.type, default=field.default)
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  for name in _POSITIVE:
    if getattr(args, name) <= 0:
      parser.error(f'--{name}={getattr(args, name)} must be positive.')
  if not args.output.endswith('.npz'):
    parser.error(f'--output={args.output} must end in .npz (the surgery code detects '
                 'image checkpoints by that suffix).')
  return args


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """--config, else the default experiment: the config whose model the ViT matches."""
  if args.config:
    return config_loading.load_config(args.config)
  return experiment_configs.load(pretrain_settings.DEFAULT_EXPERIMENT)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
  args = parse_args(argv)
  cli.set_verbosity(args.verbosity)
  from vivit_adapter.studies import image_pretrain  # pylint: disable=g-import-not-at-top
  config = load_config(args)
  fields = dataclasses.fields(pretrain_settings.PretrainSettings)
  settings = pretrain_settings.PretrainSettings(**{f.name: getattr(args, f.name) for f in fields})
  report = image_pretrain.pretrain(args.output, config, data_dir=args.data, settings=settings)
  print(f'Wrote {report["output"]}: {settings.task} top-1 {report["eval_top1"]:.3f} on '
        f'{settings.num_eval_images} held-out images, {report["train_time_s"]:.1f}s training.')
  return report


def _main() -> None:
  with cli.usage_errors():  # a bad flag value or experiment file: one line
    main()


if __name__ == '__main__':
  cli.start()
  sys.exit(cli.run(_main))
