r"""Something-Something v2, stage 1: ViViT-B/16x2 factorised encoder end to end, 8 frames.

  python -m vivit_adapter.main --config=experiments/ssv2_stage1.py \
      --workdir=runs/ssv2_stage1 --config.dataset.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=/ckpt/ViT-B_16.npz

scenic's SSv2 recipe (see vivit_adapter/recipes.py: no flips, RandAugment, mixup 0.3,
label smoothing 0.3, stochastic depth 0.3), 8 frames at stride 1.
init_from.checkpoint_path: an image ViT-B/16 .npz or scenic checkpoint (empty = scratch).
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'ssv2_stage1'
  recipes.ssv2(config)
  recipes.stage1(config, image_checkpoint='')
  return config
