"""Recipe pieces that experiment files compose: a dataset recipe, then a stage.

An experiment is `base_config()`, one dataset recipe (`synthetic`, `miniature`,
`kinetics400`, `ssv2`), one stage (`stage1`, `stage2`, `baseline`) and a few overrides:

  config = configs.base_config()
  recipes.kinetics400(config)
  recipes.stage2(config, stage1_workdir='runs/k400_stage1', num_frames=32)

Every function edits the locked config in place, so a misspelt key fails here too.

Frame stride: all three stages of a dataset sample at the same stride (stage 1 just
takes fewer frames). Stage 2 freezes the tubelet embedding and the spatial encoder that
stage 1 trained, so they must see the same spacing between frames as they did then.
"""

import ml_collections

STAGE1_NUM_FRAMES = 8


# ----------------------------------------------------------------------------------------
# Stages (docs/design.md §1).
# ----------------------------------------------------------------------------------------

def stage1(config: ml_collections.ConfigDict, image_checkpoint: str = '',
           num_frames: int = STAGE1_NUM_FRAMES) -> None:
  """End to end on few frames; the spatial encoder starts from an image ViT ('' = scratch)."""
  config.stage = 'stage1'
  _end_to_end(config, image_checkpoint, num_frames)


def baseline(config: ml_collections.ConfigDict, num_frames: int,
             image_checkpoint: str = '') -> None:
  """End to end at the stage-2 frame count, from the same start as stage 1."""
  config.stage = 'baseline'
  _end_to_end(config, image_checkpoint, num_frames)


def _end_to_end(config, image_checkpoint: str, num_frames: int) -> None:
  config.dataset.num_frames = num_frames
  config.model.freeze_spatial = False
  config.model.adapter.type = 'none'
  config.init_from.checkpoint_path = image_checkpoint
  # 'auto' tells an image ViT .npz from a scenic checkpoint by its files.
  config.init_from.checkpoint_format = 'auto'


def stage2(config: ml_collections.ConfigDict, stage1_workdir: str, num_frames: int,
           adapter: str = 'attention') -> None:
  """Frozen spatial encoder + adapter + temporal encoder, initialised from stage 1.

  Args:
    config: the config to edit.
    stage1_workdir: the stage-1 run's --workdir (its latest checkpoint is used).
    num_frames: frames per clip; the temporal position embedding is interpolated.
    adapter: 'attention', 'mlp' or 'none' (the paper's frozen-without-adapter row).
  """
  config.stage = 'stage2'
  config.dataset.num_frames = num_frames
  config.model.freeze_spatial = True
  config.model.adapter.type = adapter
  config.init_from.checkpoint_path = stage1_workdir
  config.init_from.checkpoint_format = 'workdir'
  config.init_from.step = -1
  config.init_from.restore_temporal = True
  config.init_from.restore_output_projection = True


def frozen_tower(config: ml_collections.ConfigDict, tower_checkpoint: str, variant: str,
                 num_frames: int, normalization: str, adapter: str = 'attention') -> None:
  """Stage 2 on a frozen image tower (docs/design.md §2e): no stage 1.

  The tower (a Hugging Face CLIP / SigLIP / DINOv2 directory or an OpenCLIP
  .safetensors file) is the frozen embedding and spatial encoder; the adapter, the
  temporal encoder and the head start fresh.

  Args:
    config: the config to edit (its dataset recipe already applied).
    tower_checkpoint: the tower's local path ('' until given by override).
    variant: a tower variant, e.g. 'CLIP-B/16x2' (models/variants.py TOWERS): the
      tower's sizes and switches.
    num_frames: frames per clip.
    normalization: the pixel statistics the tower was trained on ('clip', 'imagenet'
      for DINOv2, 'minus_one_to_one' for SigLIP).
    adapter: 'attention', 'mlp' or 'none'.
  """
  from vivit_adapter.models import variants  # pylint: disable=g-import-not-at-top
  variants.apply_variant(config.model, variant)
  config.stage = 'stage2'
  config.dataset.num_frames = num_frames
  config.dataset.normalization = normalization
  config.model.freeze_spatial = True
  config.model.adapter.type = adapter
  config.init_from.checkpoint_path = tower_checkpoint
  config.init_from.checkpoint_format = 'auto'


# ----------------------------------------------------------------------------------------
# Datasets and their training recipes.
# ----------------------------------------------------------------------------------------

def _epochs_with_warmup(config, epochs: float, warmup_epochs: float) -> None:
  config.num_training_epochs = epochs
  config.lr_configs.schedule = 'cosine'
  config.lr_configs.warmup_epochs = warmup_epochs
  config.lr_configs.warmup_steps = -1
  config.lr_configs.end_factor = 0.0


def _scenic_video_data(ds, base_dir: str, min_resize: int, crop_size: int) -> None:
  """scenic's video_tfrecord_dataset settings shared by its Kinetics and SSv2 configs."""
  ds.name = 'dmvr'
  ds.base_dir = base_dir
  ds.min_resize = min_resize
  ds.crop_size = crop_size
  ds.min_scale, ds.max_scale = 0.9, 1.33  # scale_{min,max}_factor, jitter always on
  ds.normalization = 'minus_one_to_one'  # zero_centering=True
  ds.num_test_clips, ds.num_test_crops = 4, 3  # 4 clips x 3 spatial crops


def _scenic_vivit_b(config) -> None:
  # Imported here: vivit_adapter.models pulls in JAX and flax, which an experiment file
  # that is only listed or loaded does not need.
  from vivit_adapter.models import variants  # pylint: disable=g-import-not-at-top
  # ViViT-B, 16x16 patches, tubelets of 2 frames; the sizes are written now, so a later
  # --config.model.hidden_size override wins and config.json records the real sizes.
  variants.apply_variant(config.model, 'B/16x2')
  config.model.classifier = 'token'
  config.init_from.kernel_init_method = 'central_frame'


def kinetics400(config: ml_collections.ConfigDict,
                base_dir: str = 'data/kinetics400') -> None:
  """scenic's ViViT-B factorised encoder recipe for Kinetics-400.

  Source: google-research/scenic,
  scenic/projects/vivit/configs/kinetics400/vivit_base_factorised_encoder.py.
  """
  _scenic_vivit_b(config)
  ds = config.dataset
  _scenic_video_data(ds, base_dir, min_resize=256, crop_size=224)
  ds.num_classes = 400
  ds.stride = 2
  ds.flip = True
  # scenic turns DMVR's colour augmentation on (brightness/contrast/saturation/hue);
  # 0.5 is this project's single-strength equivalent of DMVR's default ranges.
  ds.color_jitter = 0.5
  config.optimizer = 'momentum'
  config.optimizer_configs.momentum = 0.9
  config.optimizer_configs.weight_decay = 0.0  # l2_decay_factor = 0
  config.max_grad_norm = 1.0
  config.label_smoothing = 0.0
  config.batch_size = config.eval_batch_size = 64
  config.lr_configs.base_learning_rate = 0.05
  _epochs_with_warmup(config, epochs=30.0, warmup_epochs=2.5)


def ssv2(config: ml_collections.ConfigDict, base_dir: str = 'data/ssv2') -> None:
  """scenic's factorised-encoder recipe for Something-Something v2, on ViViT-B.

  Source: google-research/scenic,
  scenic/projects/vivit/configs/something_something_v2/vivit_large_factorised_encoder.py
  (scenic publishes it for ViViT-L; the paper this project follows reports ViViT-B).
  """
  _scenic_vivit_b(config)
  ds = config.dataset
  _scenic_video_data(ds, base_dir, min_resize=288, crop_size=256)
  ds.num_classes = 174
  ds.stride = 1
  ds.test_table = 'validation.tfrecord@*'  # SSv2's test labels are not public
  # "Pushing something from left to right" is a class: a mirrored clip changes its label.
  ds.flip = False
  ds.color_jitter = 0.0  # do_color_augment = False
  # scenic: rand_augment_num_layers=2, magnitude=20; this project's scale tops at 10.
  ds.randaugment_layers, ds.randaugment_magnitude = 2, 10
  config.mixup.alpha = 0.3
  config.label_smoothing = 0.3
  config.model.stochastic_droplayer_rate = 0.3
  config.optimizer = 'momentum'
  config.optimizer_configs.momentum = 0.9
  config.optimizer_configs.weight_decay = 0.0
  config.max_grad_norm = 1.0
  config.batch_size = config.eval_batch_size = 64
  config.lr_configs.base_learning_rate = 0.4
  _epochs_with_warmup(config, epochs=35.0, warmup_epochs=2.5)


def synthetic(config: ml_collections.ConfigDict, base_dir: str = 'data/synthetic') -> None:
  """The embedded synthetic action dataset with a tiny ViViT, fast on a 2-core CPU.

  Make the data as `make demo` does (vivit_adapter/studies/demo.py, `FULL`): 12 classes
  (the 14 without the rotate pair, whose 4-pixel shapes barely show a turn at 32x32),
  an easy scene, 150 training clips per class, 64 frames of 32x32:

    python -m data_pipelines.synthetic --output=data/synthetic --train_per_class=150 \
        --classes=move_right,move_left,move_down,move_up,grow,shrink,fade_in,fade_out,\
right_then_up,right_then_down,up_then_right,down_then_right \
        --noise_std=0.01 --max_distractors=0 --camera_jitter=0.005 --flicker=0 \
        --move_travel=3

  Each stage sets its own `num_training_steps`, sized so that the three runs fit
  the demo's 15-minute budget on a 2-core CPU.
  """
  m = config.model
  m.variant = ''
  m.hidden_size = 64
  m.patches.size = (8, 8, 2)  # 4x4 patches per frame at a 32x32 crop
  m.spatial_transformer.num_layers = 4
  m.temporal_transformer.num_layers = 2
  for enc in (m.spatial_transformer, m.temporal_transformer):
    enc.num_heads, enc.mlp_dim = 4, 256
  m.adapter.hidden_size, m.adapter.num_heads = 32, 4
  # From scratch, a zero-initialised head kept this small model at chance for hundreds
  # of steps (measured); stage 2 inherits stage 1's trained head either way.
  m.head_kernel_init = 'lecun_normal'
  ds = config.dataset
  ds.name = 'dmvr'
  ds.base_dir = base_dir
  ds.stride = 2  # 32 frames at stride 2 span the whole 64-frame clip
  ds.min_resize = ds.crop_size = 32
  # No scale jitter: the crop is the whole frame. (A scale above 1 makes
  # video_ops.resized_crop sample outside the frame, which pads black edges.)
  ds.min_scale = ds.max_scale = 1.0
  # Classes come in mirrored pairs (move_left/move_right): flipping would swap labels.
  ds.flip = False
  # A 32-frame clip at stride 2 covers all 64 frames: further temporal views repeat it.
  ds.num_test_clips, ds.num_test_crops = 1, 1  # one crop covers the whole 32x32 frame
  config.optimizer = 'adamw'
  config.optimizer_configs.weight_decay = 0.05
  config.max_grad_norm = 1.0
  config.batch_size = config.eval_batch_size = 32
  config.lr_configs.base_learning_rate = 1e-3
  config.lr_configs.schedule = 'cosine'
  config.lr_configs.warmup_steps = 50
  config.lr_configs.end_factor = 0.0
  config.log_summary_steps = 25
  config.log_eval_steps = 250
  config.checkpoint_steps = 100
  config.max_to_keep = 1


def miniature(config: ml_collections.ConfigDict, base_dir: str = 'data/mini64') -> None:
  """The synthetic recipe at 64x64 px: 64 tokens per frame, a larger miniature.

  With 8-px patches a 64-px frame has 64 tokens (ViViT-B at 224 px: 196). Measured with
  the benchmark CLI on a 2-core CPU (docs/results.md section 6), a clip costs ~6x the
  32-px recipe's, and stage 2 is 0.435x of the end-to-end 32-frame step against the
  32-px recipe's 0.30x and ViViT-B's 0.29-0.32x. So the ablation runs the 32-px
  recipe (`synthetic`); this one is for a machine that can afford it. Its data:

    python -m data_pipelines.synthetic --output=data/mini64 --resolution=64 \
        --train_per_class=100 \
        --classes=move_right,move_left,move_down,move_up,grow,shrink,fade_in,fade_out,\
right_then_up,right_then_down,up_then_right,down_then_right \
        --noise_std=0.01 --max_distractors=0 --camera_jitter=0.005 --flicker=0 \
        --move_travel=3

  The classes come in mirrored and reordered pairs, so one frame cannot tell them
  apart: motion and order decide the class.
  """
  synthetic(config, base_dir)
  ds = config.dataset
  ds.min_resize = ds.crop_size = 64  # whole-frame crop, as in the synthetic recipe
  # Half the synthetic recipe's batch: a 64-px 32-frame step is ~4x the work.
  config.batch_size = 16
  config.eval_batch_size = 32
  config.lr_configs.base_learning_rate = 3e-3
