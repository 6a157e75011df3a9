r"""Synthetic actions, stage 2: frozen stage-1 spatial encoder + attention adapter, 32 frames.

  python -m vivit_adapter.main --config=experiments/synthetic_stage2.py \
      --workdir=runs/synthetic_stage2 \
      [--config.init_from.checkpoint_path=runs/synthetic_stage1]

Needs a finished synthetic_stage1 run (its workdir, latest checkpoint). Only the
adapter, the temporal encoder and the head train.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'synthetic_stage2'
  recipes.synthetic(config)
  recipes.stage2(config, stage1_workdir='runs/synthetic_stage1', num_frames=32)
  # Fewer parameters train, from a good start, and a step skips the spatial backward
  # pass: stage 1 + stage 2 together take less time than the baseline.
  config.num_training_steps = 250
  return config
