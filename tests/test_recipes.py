"""vivit_adapter.recipes: stages and dataset recipes compose on a locked config."""

import pytest

from vivit_adapter import configs
from vivit_adapter import recipes
from vivit_adapter.train_lib import startup

DATASETS = (recipes.synthetic, recipes.miniature, recipes.kinetics400, recipes.ssv2)


def _config(*steps):
  config = configs.base_config()
  for step in steps:
    step(config)
  return config


@pytest.mark.parametrize('dataset', DATASETS)
def test_a_stage_sets_every_field_another_stage_touches(dataset):
  """Applying stage1/baseline over stage2 gives exactly the plain stage1/baseline."""
  to_stage2 = lambda c: recipes.stage2(c, 'runs/s1', num_frames=64, adapter='mlp')
  for stage in (recipes.stage1, lambda c: recipes.baseline(c, num_frames=32)):
    plain = _config(dataset, stage)
    assert _config(dataset, to_stage2, stage).to_dict() == plain.to_dict()
  plain = _config(dataset, to_stage2)
  assert _config(dataset, recipes.stage1, to_stage2).to_dict() == plain.to_dict()
  assert (plain.model.adapter.type, plain.dataset.num_frames) == ('mlp', 64)
  startup.check_config(plain)


def test_dataset_recipes_keep_the_stage():
  for dataset in DATASETS:
    config = _config(lambda c: recipes.stage2(c, 'w', 32), dataset)
    assert config.model.freeze_spatial and config.init_from.checkpoint_path == 'w'
    assert config.dataset.num_frames == 32


def test_image_checkpoint_goes_to_init_from():
  config = _config(recipes.kinetics400,
                   lambda c: recipes.stage1(c, image_checkpoint='/ckpt/vit.npz'))
  assert config.init_from.checkpoint_path == '/ckpt/vit.npz'
  assert config.init_from.checkpoint_format == 'auto'
  assert config.dataset.num_frames == recipes.STAGE1_NUM_FRAMES
