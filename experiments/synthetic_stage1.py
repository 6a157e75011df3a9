r"""Synthetic actions, stage 1: a tiny ViViT trained end to end on 8 frames.

  python -m data_pipelines.synthetic --output=data/synthetic
  python -m vivit_adapter.main --config=experiments/synthetic_stage1.py \
      --workdir=runs/synthetic_stage1

8 frames at stride 2 see one half of a clip, so the compound actions (right_then_up
vs right_then_down, ...) stay ambiguous: stage 2 and the baseline see all of it.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'synthetic_stage1'
  recipes.synthetic(config)
  recipes.stage1(config)
  # 8-frame steps are cheap (~0.15 s on 2 CPU cores): many of them train the spatial
  # encoder that stage 2 freezes.
  config.num_training_steps = 900
  return config
