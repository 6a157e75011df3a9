r"""Something-Something v2, stage 2: frozen spatial encoder + attention adapter, 32 frames.

  python -m vivit_adapter.main --config=experiments/ssv2_stage2.py \
      --workdir=runs/ssv2_stage2 --config.dataset.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=runs/ssv2_stage1

The paper's row "frozen spatial + adapter + temporal init from the 8-frame model"
(63.85 top-1 vs 64.45 for the baseline, at 0.62x its training time).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'ssv2_stage2'
  recipes.ssv2(config)
  recipes.stage2(config, stage1_workdir='runs/ssv2_stage1', num_frames=32)
  config.model.spatial_chunk_size = 4
  return config
