r"""Kinetics-400, baseline: ViViT-B/16x2 factorised encoder end to end on 32 frames.

  python -m vivit_adapter.main --config=experiments/k400_baseline.py \
      --workdir=runs/k400_baseline --config.dataset.base_dir=/data/kinetics400 \
      --config.init_from.checkpoint_path=/ckpt/ViT-B_16.npz

scenic's Kinetics-400 recipe unchanged: the reference for stage 1 + stage 2. Longer
clips (--config.dataset.num_frames=64) may need --config.model.remat=True to fit.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'k400_baseline'
  recipes.kinetics400(config)
  recipes.baseline(config, num_frames=32, image_checkpoint='')
  return config
