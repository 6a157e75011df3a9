r"""Miniature (64x64 px, 64 tokens per frame), stage 1: end to end on 8 frames.

  python -m vivit_adapter.main --config=experiments/mini64_stage1.py \
      --workdir=runs/mini64_stage1

The data: see recipes.miniature (the ablation generates it itself).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'mini64_stage1'
  recipes.miniature(config)
  recipes.stage1(config)
  # The longest of the ablation's stage-1 grid (studies/ablation/plan.py).
  config.num_training_steps = 600
  return config
