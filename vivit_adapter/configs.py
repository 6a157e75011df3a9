"""The one place where every config key is declared, with its default.

Experiment files under `experiments/` start from `base_config()` and override a few
fields. The returned ConfigDict is locked: assigning a key that is not declared here
(in an experiment file or through `--config.some.key=value`) raises an error that
names the key, instead of being silently ignored.

Names follow scenic's ViViT configs where scenic has one. Values are checked by the
components that use them, each its own section (models, checkpoints, the input pipeline,
the optimizer), from the one start-up check, train_lib.startup.check_config. This module
imports none of them, so every one of them can read configs (and compare them) here.
"""

import functools
import json
import operator
from typing import Dict, Tuple

import ml_collections

CONFIG_FILE = 'config.json'  # a run's config, saved beside its checkpoints

# Stage names. `config.stage` is a label: the recipe functions (recipes.stage1, stage2,
# baseline) set it together with the fields that make the stage (freeze_spatial, adapter,
# init_from); no code branches on it to choose a recipe. The trainer records it in its run
# summary and the start-up checks (train_lib.startup) use it and its names.
STAGES = ('stage1', 'stage2', 'baseline', 'image')


def _feature_cache_defaults() -> ml_collections.ConfigDict:
  cache = ml_collections.ConfigDict()
  # Stage 2 from cached frozen features (docs/design.md §2b): the directory that
  # `python -m vivit_adapter.extract_features` wrote; '' trains from video as usual.
  cache.dir = ''
  # With a cache, also run the final multi-view test on the raw test videos (the whole
  # model, as every other run is tested), besides the test from cached features.
  cache.test_on_video = True
  return cache


def _model_defaults() -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  # A named size such as 'B/16x2' (see vivit_adapter.models.variants). It is expanded
  # into hidden_size, patches.size and both transformers' sizes when it is set
  # (variants.apply_variant, or a --config.model.variant override), so the fields below
  # always hold the real sizes and an explicit override of one of them wins. '' = sizes
  # given by hand.
  model.variant = ''
  model.hidden_size = 768
  # (h, w, t); bias: the tubelet embedding has a bias (False for CLIP's towers).
  model.patches = ml_collections.ConfigDict({'size': (16, 16, 2), 'bias': True})
  model.spatial_transformer = ml_collections.ConfigDict({
      'num_layers': 12, 'num_heads': 12, 'mlp_dim': 3072,
      # The image towers' switches (models/towers.py, docs/design.md §2e), scenic's ViT
      # by default. A tower variant such as 'CLIP-L/14x2' sets them (models/variants.py).
      'pre_norm': False,  # LayerNorm before the blocks (CLIP's ln_pre)
      'mlp_activation': 'gelu_tanh',  # models.towers.ACTIVATIONS: 'gelu_tanh', 'gelu', 'quick_gelu'
      'layer_norm_epsilon': 1e-6,  # 1e-5 for CLIP
      'layer_scale': False,  # a learned per-channel scale on each residual branch (DINOv2)
      'num_registers': 0,  # register tokens after the class token (DINOv2 with registers)
      # A frame's vector, models.towers.POOLINGS: '' as config.model.classifier, 'token',
      # 'mean' (of the patches; no class token) or 'map' (SigLIP's attention pooling).
      'pooling': '',
      # With a pooling, the tokens the adapter reads beside that vector,
      # models.towers.ADAPTER_TOKENS: 'patches', or 'all' (registers too).
      'adapter_tokens': 'patches',
  })
  model.temporal_transformer = ml_collections.ConfigDict(
      {'num_layers': 4, 'num_heads': 12, 'mlp_dim': 3072})
  model.classifier = 'token'  # models.CLASSIFIERS: 'token' or 'gap'
  model.dropout_rate = 0.0
  model.attention_dropout_rate = 0.0
  model.stochastic_droplayer_rate = 0.0
  model.adapter = ml_collections.ConfigDict({
      'type': 'none',  # models.adapter.ADAPTER_TYPES: 'attention', 'mlp' or 'none'
      'hidden_size': 0,  # 0 -> model.hidden_size // 4
      'num_heads': 4,  # attention adapter only
      'mlp_dim': 0,  # 0 -> 4 * adapter.hidden_size (attention adapter only)
  })
  model.freeze_spatial = False
  # The spatial dial (docs/design.md §2d), with freeze_spatial: train the top k of the
  # spatial_transformer.num_layers layers (and the encoder norm) above the frozen
  # embedding and lower layers; a feature cache then stores every token below them.
  # 0 = every spatial layer frozen (the paper's stage 2).
  model.trainable_spatial_layers = 0
  # Temporal indices per chunk of the frozen spatial pass (and of the attention
  # adapter, rematerialised); 0 runs all indices at once.
  model.spatial_chunk_size = 0
  model.remat = False
  # The temporal encoder at long clips (thousands of tokens): rematerialise its blocks,
  # and/or attend over blocks of this many queries (models/attention.py; 0 = plain
  # attention). Same outputs and gradients; off by default (today's numbers).
  model.temporal_remat = False
  model.temporal_query_chunk_size = 0
  # Stage 2 with spatial_chunk_size: run the frozen pass and the adapter in one
  # rematerialised scan that keeps no frozen tokens (the backward pass recomputes each
  # chunk's): memory no longer grows with frames beyond the input, for a second frozen
  # forward pass per step. Needs freeze_spatial and spatial_chunk_size > 0.
  model.recompute_frozen = False
  model.dtype = 'float32'  # activation dtype, models.DTYPES: 'float32' or 'bfloat16'
  # models.vivit.HEAD_INITS: 'zeros' (scenic) or 'lecun_normal' (training a small model
  # from scratch).
  model.head_kernel_init = 'zeros'
  return model


def _dataset_defaults() -> ml_collections.ConfigDict:
  ds = ml_collections.ConfigDict()
  ds.name = 'dmvr'  # data_pipelines.reader.DATASET_NAMES: 'dmvr' (TFRecord shards) or 'tfds'
  ds.base_dir = ''
  ds.train_table = 'train.tfrecord@*'
  ds.eval_table = 'validation.tfrecord@*'
  ds.test_table = 'test.tfrecord@*'
  ds.label_map = ''  # file with one class name per line; '' -> base_dir/label_map.txt if present
  ds.num_classes = 0  # 0 -> read from base_dir/metadata.json
  ds.num_train_examples = 0  # 0 -> read from base_dir/metadata.json
  ds.num_eval_examples = 0
  ds.num_test_examples = 0
  ds.num_frames = 8
  ds.stride = 1
  ds.min_resize = 256
  ds.crop_size = 224
  ds.min_scale = 0.875  # scale jitter of the random crop (train)
  ds.max_scale = 1.33
  ds.flip = True  # horizontal flip in training; off for direction-sensitive data
  ds.color_jitter = 0.0  # strength of colour jitter, 0 disables
  ds.randaugment_layers = 0  # 0 disables RandAugment-style ops
  ds.randaugment_magnitude = 10
  # models.NORMALIZATIONS: 'minus_one_to_one' (SigLIP too), 'imagenet' (DINOv2 too) or
  # 'clip' (CLIP's and OpenCLIP's towers) (mean/std). The pipelines
  # yield uint8 pixels; the model normalises them on the device (models/inputs.py).
  ds.normalization = 'minus_one_to_one'
  ds.num_test_clips = 4
  ds.num_test_crops = 3
  ds.shuffle_buffer = 256  # records per block that training permutes (per epoch, resumable)
  # Training, evaluation and extraction skip bad records (undecodable, unlabelled, a
  # damaged shard's tail) and stop once more than this fraction of the records read is
  # bad, judged from the 20th record on: one bad clip in a 24-clip dataset (4%) trains,
  # a systematically broken dataset stops early.
  ds.max_bad_fraction = 0.05
  ds.num_parallel_reads = 8  # shard files read at once per host
  ds.tfds_name = ''  # name='tfds': the dataset's name (offline, from tfds_data_dir)
  ds.tfds_data_dir = ''
  ds.tfds_train_split = 'train'  # tfds split names read for train / eval / test
  ds.tfds_eval_split = 'validation'
  ds.tfds_test_split = 'test'
  return ds


def _init_from_defaults() -> ml_collections.ConfigDict:
  init = ml_collections.ConfigDict()
  # '' = train from scratch. A stage-1 workdir (or its checkpoints/<step>), a scenic
  # flax checkpoint, an image ViT .npz, a Hugging Face CLIP / SigLIP / DINOv2 model
  # directory (config.json + model.safetensors) or an OpenCLIP .safetensors file.
  init.checkpoint_path = ''
  # checkpoints.load.FORMATS: 'auto', 'workdir', 'scenic', 'vit_npz', 'huggingface',
  # 'open_clip'.
  init.checkpoint_format = 'auto'
  init.step = -1  # checkpoint step of a workdir; -1 -> latest
  # 2D->3D inflation, checkpoints.vit_npz.KERNEL_INIT_METHODS: 'central_frame' or 'average'.
  init.kernel_init_method = 'central_frame'
  # An image checkpoint without a cls token (pooled by 'gap'/'map', e.g. SigLIP) into a
  # classifier='token' model, checkpoints.vit_npz.MISSING_CLS: 'error', or 'zeros' to
  # start the cls token from zeros.
  init.missing_cls = 'error'
  init.restore_temporal = True  # take the temporal encoder from a video checkpoint
  init.restore_output_projection = True
  return init


def base_config() -> ml_collections.ConfigDict:
  """Returns the locked base config: every key the project reads, with defaults."""
  c = ml_collections.ConfigDict()
  c.experiment_name = ''
  c.stage = 'stage1'
  c.rng_seed = 0
  c.model = _model_defaults()
  c.dataset = _dataset_defaults()
  c.init_from = _init_from_defaults()

  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_training_epochs = 30.0
  c.num_training_steps = 0  # > 0 overrides num_training_epochs
  c.gradient_accumulation_steps = 1

  c.optimizer = 'momentum'  # train_lib.optimizers.OPTIMIZERS: 'momentum', 'adamw' or 'sgd'
  c.optimizer_configs = ml_collections.ConfigDict({
      'momentum': 0.9, 'nesterov': False, 'beta1': 0.9, 'beta2': 0.999,
      'epsilon': 1e-8, 'weight_decay': 0.0})
  c.max_grad_norm = 1.0  # 0 disables clipping
  c.lr_configs = ml_collections.ConfigDict({
      # train_lib.optimizers.SCHEDULES: 'cosine', 'linear' or 'constant', after linear warm-up.
      'schedule': 'cosine',
      'base_learning_rate': 0.05,
      'warmup_epochs': 2.5,
      'warmup_steps': -1,  # >= 0 overrides warmup_epochs
      'end_factor': 0.0})
  c.label_smoothing = 0.0
  c.mixup = ml_collections.ConfigDict({'alpha': 0.0})

  c.log_summary_steps = 50
  c.log_eval_steps = 0  # 0 -> once per epoch
  c.checkpoint_steps = 0  # 0 -> once per epoch
  c.max_to_keep = 3
  c.max_eval_batches = 0  # 0 -> the whole split
  c.run_test = True  # multi-view test at the end
  # Per-class accuracy, the confusion matrix and one line per video (train_lib/class_report):
  # always written for the final test; at every evaluation too with at_eval=True. top_k:
  # the classes (with scores) each per-video line lists.
  c.class_report = ml_collections.ConfigDict({'at_eval': False, 'top_k': 5})
  c.feature_cache = _feature_cache_defaults()
  c.lock()
  return c


# Keys whose values fix the shapes of the parameters or of the optimizer state: a workdir's
# checkpoints cannot be resumed under other values (`changes_refused`).
STATE_SHAPE_KEYS = (
    'model.variant', 'model.hidden_size', 'model.patches', 'model.spatial_transformer',
    'model.temporal_transformer', 'model.classifier', 'model.adapter',
    'model.freeze_spatial', 'model.trainable_spatial_layers', 'dataset.num_frames', 'dataset.crop_size',
    'dataset.num_classes', 'optimizer', 'gradient_accumulation_steps')
# Keys that never change what a run computes: logging, checkpoint and evaluation
# cadence, and where the same data lives (a moved dataset or feature cache). init_from
# only matters before a workdir has a checkpoint.
BOOKKEEPING_KEYS = (
    'experiment_name', 'log_summary_steps', 'log_eval_steps', 'checkpoint_steps',
    'max_to_keep', 'max_eval_batches', 'run_test', 'class_report', 'eval_batch_size',
    'feature_cache',
    'init_from', 'dataset.base_dir', 'dataset.label_map', 'dataset.tfds_data_dir',
    'dataset.num_parallel_reads', 'dataset.max_bad_fraction')


def flat_dict(tree, prefix: str = '') -> Dict[str, object]:
  """A nested dict (or ConfigDict) as {'a.b.c': leaf}, leaves as JSON has them (tuples
  become lists), so a config compares equal to the config.json it was saved as."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  out = {}
  for key, value in json.loads(json.dumps(tree, default=str)).items():
    if isinstance(value, dict):
      out.update(flat_dict(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differences(old, new) -> Dict[str, Tuple[object, object]]:
  """{dotted key: (old value, new value)} for the keys both configs have that differ.

  A key added to (or removed from) this file since `old` was saved is not a difference:
  a new key's default keeps the old behaviour.
  """
  a, b = flat_dict(old), flat_dict(new)
  return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}


def lookup(config, key: str):
  """The value of dotted `key` ('a.b.c') in a ConfigDict or nested dict."""
  return functools.reduce(operator.getitem, key.split('.'), config)


def check_choices(config, choices: Dict[str, Tuple[object, ...]]) -> None:
  """Raises ValueError naming the key when a key of `choices` ({dotted key: the names it
  may take}) holds another value; each component passes its own named choices."""
  for key, names in choices.items():
    value = lookup(config, key)
    if value not in names:
      raise ValueError(f'config.{key}={value!r}; expected one of {names}.')


def under(key: str, prefixes) -> bool:
  """Whether dotted `key` is one of `prefixes` or lies below one."""
  return any(key == p or key.startswith(p + '.') for p in prefixes)


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the run's config as JSON beside its checkpoints; returns the path."""
  import os  # pylint: disable=g-import-not-at-top
  from data_pipelines import fs  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, CONFIG_FILE)
  fs.atomic_write(path, config.to_json(indent=2))
  return path


def load_saved(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config a run saved in `workdir`, on top of today's declared defaults."""
  import os  # pylint: disable=g-import-not-at-top
  from data_pipelines import fs  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, CONFIG_FILE)
  if not fs.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {workdir!r} is not a vivit_adapter workdir '
        '(a run writes its config there when it starts).')
  with fs.open(path) as f:
    saved = json.load(f)
  config = base_config()
  config.unlock()
  _update_declared(config, saved, 'config')
  config.lock()
  return config


def _update_declared(config, values, prefix):
  for key, value in values.items():
    if key not in config:
      raise KeyError(f'{prefix}.{key} in a saved config is not a declared key.')
    if isinstance(config[key], ml_collections.ConfigDict):
      _update_declared(config[key], value, f'{prefix}.{key}')
    else:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value
