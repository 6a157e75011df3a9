r"""Kinetics-400 on a frozen CLIP ViT-B/16: adapter + temporal encoder + head, 32 frames.

  python -m vivit_adapter.main --config=experiments/k400_clip_stage2.py \
      --workdir=runs/k400_clip_stage2 --config.dataset.base_dir=/data/kinetics400 \
      --config.init_from.checkpoint_path=/ckpt/clip-vit-base-patch16

init_from.checkpoint_path: a local Hugging Face CLIPVisionModel or CLIPModel directory
(config.json + model.safetensors), or an OpenCLIP ViT-B-16 .safetensors file (for
OpenCLIP's own trainings, which use exact GELU, add
--config.model.variant=OpenCLIP-B/16x2). No stage 1: the tower is the spatial
encoder, frozen; the temporal encoder and head start fresh. scenic's Kinetics-400 data
and optimiser settings; the learning rate is not tuned for this route.
"""

from vivit_adapter import configs
from vivit_adapter import recipes


def get_config():
  config = configs.base_config()
  config.experiment_name = 'k400_clip_stage2'
  recipes.kinetics400(config)
  recipes.frozen_tower(config, tower_checkpoint='', variant='CLIP-B/16x2', num_frames=32,
                       normalization='clip')
  config.model.spatial_chunk_size = 4
  return config
