"""What an image-pretraining run does (`studies.image_pretrain`), in a module without JAX:
the program's flags are these fields, and its --help must not wait for JAX."""

import dataclasses

# The experiment whose config.model fixes the image ViT's sizes unless one is given.
DEFAULT_EXPERIMENT = 'synthetic_stage1'


@dataclasses.dataclass
class PretrainSettings:
  """What one image-pretraining run does; the CLI's flags map onto these fields."""
  task: str = 'position'  # a key of studies.image_pretrain.TASKS, or VIDEO_FRAMES
  steps: int = 400
  batch_size: int = 128
  learning_rate: float = 3e-3
  weight_decay: float = 0.05
  num_train_images: int = 6000
  num_eval_images: int = 1000
  seed: int = 0
