r"""Miniature (64x64 px), baseline: the same ViViT trained end to end on 32 frames.

  python -m vivit_adapter.main --config=experiments/mini64_baseline.py \
      --workdir=runs/mini64_baseline

What stage 1 + stage 2 is measured against (accuracy, time).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'mini64_baseline'
  recipes.miniature(config)
  recipes.baseline(config, num_frames=32)
  # Twice the 32-px study's longest baseline (a 64-px clip has 4x the tokens).
  config.num_training_steps = 1200
  return config
