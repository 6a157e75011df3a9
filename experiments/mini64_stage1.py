r"""Miniature (64x64 px, 64 tokens per frame), stage 1: end to end on 8 frames.

  python -m vivit_adapter.main --config=experiments/mini64_stage1.py \
      --workdir=runs/mini64_stage1

The data: see recipes.miniature.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'mini64_stage1'
  recipes.miniature(config)
  recipes.stage1(config)
  # Longer than the 32-px study's stage 1 (a 64-px frame has 4x the tokens).
  config.num_training_steps = 600
  return config
