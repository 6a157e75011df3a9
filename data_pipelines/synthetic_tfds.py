"""The synthetic action dataset as a TFDS builder, built offline from the generator.

  import data_pipelines.synthetic_tfds  # registers 'synthetic_actions'
  ds = tfds.load('synthetic_actions/tiny', split='train', data_dir=DIR)

Clips, labels and JPEG bytes are those of `python -m data_pipelines.synthetic` with the
same settings; only the container differs. Other sizes: pass
`builder_kwargs={'config': SyntheticActionsConfig(name=..., ...)}`.
"""

import dataclasses
from typing import Optional, Tuple

from data_pipelines import synthetic
from data_pipelines import tf_runtime

tfds = tf_runtime.import_tensorflow_datasets()


@dataclasses.dataclass(eq=False)
class SyntheticActionsConfig(tfds.core.BuilderConfig):
  """Size of the dataset; the defaults are those of the generator's CLI."""
  resolution: int = 32
  num_frames: int = 64
  train_per_class: int = 100
  val_per_class: int = 20
  test_per_class: int = 20
  seed: int = 0
  classes: Optional[Tuple[str, ...]] = None  # None: every action
  scene: synthetic.SceneConfig = synthetic.SceneConfig()


class SyntheticActions(tfds.core.GeneratorBasedBuilder):
  """Shapes whose action (move, grow, rotate, fade, compound) is the label."""

  VERSION = tfds.core.Version(f'{synthetic.GENERATOR_VERSION}.0.0')
  RELEASE_NOTES = {str(VERSION): f'Generator version {synthetic.GENERATOR_VERSION}.'}
  BUILDER_CONFIGS = [
      SyntheticActionsConfig(name='default', description='32x32, 64 frames.'),
      SyntheticActionsConfig(name='res64', resolution=64, description='64x64, 64 frames.'),
      SyntheticActionsConfig(name='tiny', resolution=16, num_frames=16, train_per_class=2,
                             val_per_class=1, test_per_class=1,
                             description='For tests: 16x16, 16 frames, 4 clips a class.'),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    shape = (cfg.num_frames, cfg.resolution, cfg.resolution, 3)
    return self.dataset_info_from_configs(
        description=synthetic.__doc__.split('\n\n')[1],
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Video(shape=shape, encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(
                names=synthetic.resolve_classes(cfg.classes)),
        }),
        supervised_keys=('video', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the generator makes the data
    cfg = self.builder_config
    per_class = dict(zip(synthetic.SPLITS, (cfg.train_per_class, cfg.val_per_class,
                                            cfg.test_per_class)))
    return {split: self._generate_examples(split, n) for split, n in per_class.items() if n}

  def _generate_examples(self, split: str, per_class: int):
    cfg = self.builder_config
    clips = synthetic.iter_clips(
        split, synthetic.resolve_classes(cfg.classes), per_class, seed=cfg.seed,
        resolution=cfg.resolution, num_frames=cfg.num_frames, scene=cfg.scene)
    for clip in clips:
      # Encoded bytes are stored as they are: the same JPEGs as the DMVR shards.
      yield clip.video_id, {'video': synthetic.encode_frames(clip.frames),
                            'label': clip.label}
