r"""Synthetic actions, baseline: the same tiny ViViT trained end to end on 32 frames.

  python -m vivit_adapter.main --config=experiments/synthetic_baseline.py \
      --workdir=runs/synthetic_baseline

What stage 1 + stage 2 is measured against (accuracy, time, memory).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'synthetic_baseline'
  recipes.synthetic(config)
  recipes.baseline(config, num_frames=32)
  # As much training time as stage 1 + stage 2 together, or more (~0.7 s a step).
  config.num_training_steps = 350
  return config
