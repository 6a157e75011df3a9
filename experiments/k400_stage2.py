r"""Kinetics-400, stage 2: frozen ViViT-B spatial encoder + attention adapter, 32 frames.

  python -m vivit_adapter.main --config=experiments/k400_stage2.py \
      --workdir=runs/k400_stage2_f64 --config.dataset.base_dir=/data/kinetics400 \
      --config.init_from.checkpoint_path=runs/k400_stage1 --config.dataset.num_frames=64

Starts from the k400_stage1 run (spatial and temporal encoders, embedding, head);
64 or 128 frames by override. The frozen spatial pass runs 4 temporal indices at a
time, so its activations do not grow with the clip.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'k400_stage2'
  recipes.kinetics400(config)
  recipes.stage2(config, stage1_workdir='runs/k400_stage1', num_frames=32)
  config.model.spatial_chunk_size = 4
  return config
