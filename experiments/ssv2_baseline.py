r"""Something-Something v2, baseline: ViViT-B/16x2 factorised encoder end to end, 32 frames.

  python -m vivit_adapter.main --config=experiments/ssv2_baseline.py \
      --workdir=runs/ssv2_baseline --config.dataset.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=/ckpt/ViT-B_16.npz

scenic's SSv2 recipe unchanged (the paper's baseline row, 64.45 top-1).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'ssv2_baseline'
  recipes.ssv2(config)
  recipes.baseline(config, num_frames=32, image_checkpoint='')
  return config
