r"""Kinetics-400, stage 1: ViViT-B/16x2 factorised encoder end to end on 8 frames.

  python -m vivit_adapter.main --config=experiments/k400_stage1.py \
      --workdir=runs/k400_stage1 --config.dataset.base_dir=/data/kinetics400 \
      --config.init_from.checkpoint_path=/ckpt/ViT-B_16.npz

scenic's Kinetics-400 recipe (see vivit_adapter/recipes.py), 8 frames at stride 2.
init_from.checkpoint_path: an image ViT-B/16 .npz (google-research/vision_transformer or
big_vision layout) or a scenic ViT checkpoint; left empty, the model starts from
scratch, which on Kinetics-400 costs many points of accuracy.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'k400_stage1'
  recipes.kinetics400(config)
  recipes.stage1(config, image_checkpoint='')
  return config
