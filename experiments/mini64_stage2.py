r"""Miniature (64x64 px), stage 2: frozen stage-1 spatial encoder + attention adapter, 32 frames.

  python -m vivit_adapter.main --config=experiments/mini64_stage2.py \
      --workdir=runs/mini64_stage2 [--config.feature_cache.dir=runs/mini64_cache]

Needs a finished mini64_stage1 run. Only the adapter, the temporal encoder and the
head train, from a feature cache (python -m vivit_adapter.extract_features) or video.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'mini64_stage2'
  recipes.miniature(config)
  recipes.stage2(config, stage1_workdir='runs/mini64_stage1', num_frames=32)
  # Twice the 32-px study's longest stage 2: from the cache a stage-2 step is cheap.
  config.num_training_steps = 2400
  return config
