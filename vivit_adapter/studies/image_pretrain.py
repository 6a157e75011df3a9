r"""A small image-pretraining step: the stand-in for the ImageNet ViT checkpoint.

The paper's spatial encoder starts from an ImageNet ViT. On the synthetic world, this
module trains the same spatial ViT (width, depth, heads, patch size taken from an
experiment file) as an image classifier on single synthetic frames labelled with where
the actor is, or its shape (`data_pipelines.synthetic.image_example`), and saves it as
an image ViT `.npz` in google-research/vision_transformer's layout, so that the ViViT
loads it through the same surgery as a real checkpoint (`checkpoint_format='vit_npz'`).

  python -m vivit_adapter.image_pretrain --output=runs/ablation/vit_image.npz \
      [--data=data/synthetic] [--steps=400] [--config=experiments/synthetic_stage1.py]

(the program is vivit_adapter/image_pretrain.py; `pretrain` here does the work).
`data_dir` names a synthetic video dataset whose metadata.json fixes the resolution
and the scene knobs, so the images come from the same world as its videos; without
it, the generator's defaults and the config's crop size are used.

For a video dataset that is not synthetic, the task `video_frames` classifies single
frames of the training videos (config.dataset's tables) labelled with their video's
class, resized and centre-cropped as evaluation clips are: the best image task such a
dataset offers without another image collection.
"""

import dataclasses
import json
import os
import time
from typing import Dict, NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipelines import tf_runtime
from vivit_adapter.models import inputs as model_inputs
from vivit_adapter.models import layers
from vivit_adapter.models.vivit import EncoderSpec
from vivit_adapter.studies.pretrain_settings import DEFAULT_EXPERIMENT, PretrainSettings

# This project's block names -> google-research/vision_transformer's (the inverse of
# checkpoints.vit_npz's renaming), so the saved file is in the most common layout.
_VT_NAMES = {'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
             'LayerNorm_1': 'LayerNorm_2', 'MlpBlock_0': 'MlpBlock_3'}
# Images come from their own rng stream: a 3-element key never equals a clip's 4-element
# key (synthetic.clip_rng), so no image repeats a video frame's draws.
_IMAGE_STREAM = 1 << 21


class ImageViT(nn.Module):
  """An image ViT with vision_transformer's names: embedding, cls, Transformer, head.

  Its `Transformer` is this project's `layers.Encoder`, the module the ViViT's spatial
  encoder is made of, so the two compute the same function on the same weights.
  """
  num_classes: int
  hidden_size: int
  patch_size: Tuple[int, int]  # (h, w)
  encoder: EncoderSpec

  @nn.compact
  def __call__(self, images, *, train: bool = False, features: bool = False):
    x = nn.Conv(self.hidden_size, self.patch_size, strides=self.patch_size,
                padding='VALID', name='embedding')(images)
    b, h, w, d = x.shape
    cls = self.param('cls', nn.initializers.zeros, (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x.reshape(b, h * w, d)], axis=1)
    x = layers.Encoder(num_layers=self.encoder.num_layers, mlp_dim=self.encoder.mlp_dim,
                       num_heads=self.encoder.num_heads, deterministic=not train,
                       name='Transformer')(x)
    if features:
      return x  # (B, 1+N, D): what the ViViT's spatial encoder computes per frame
    return nn.Dense(self.num_classes, name='head')(x[:, 0])


class ImageData(NamedTuple):
  images: np.ndarray  # (N, R, R, 3) float32, normalised as the video input is
  labels: np.ndarray  # (N,) int32


def image_model(model_config: ml_collections.ConfigDict, num_classes: int) -> ImageViT:
  """The image ViT whose weights fit `config.model`'s tubelet embedding and spatial encoder."""
  cfg = model_config
  enc = cfg.spatial_transformer
  ph, pw, _ = cfg.patches.size
  return ImageViT(num_classes=num_classes, hidden_size=cfg.hidden_size,
                  patch_size=(int(ph), int(pw)),
                  encoder=EncoderSpec(enc.num_layers, enc.num_heads, enc.mlp_dim))


def world_of(data_dir: str, default_resolution: int):
  """(resolution, SceneConfig) of a synthetic dataset's metadata.json, or the defaults."""
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  if not data_dir:
    return default_resolution, synthetic.SceneConfig()
  path = os.path.join(data_dir, 'metadata.json')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'--data={data_dir}: no metadata.json there; make the dataset with '
        f'`python -m data_pipelines.synthetic --output={data_dir}` or omit --data.')
  with open(path) as f:
    meta = json.load(f)
  if meta.get('source') != 'data_pipelines.synthetic':
    raise ValueError(f'{path}: not a data_pipelines.synthetic dataset (source='
                     f'{meta.get("source")!r}); the image task needs its scene knobs.')
  return int(meta['resolution']), synthetic.SceneConfig(**meta['scene'])


# Image tasks: name -> (number of classes, label of a synthetic.ImageExample).
# 'position': which cell of a 4x4 grid holds the actor's centre (where the main object
# is, the ImageNet-like part; the grid is coarse enough to need the object, not one
# pixel). 'shape': the actor's shape; at 32x32 px (actor radius 3-5 px) a small ViT
# learns it slowly and overfits a few thousand images, so it is not the default.
_GRID = 4
TASKS = {
    'position': (_GRID * _GRID,
                 lambda e: int(e.y * _GRID) * _GRID + int(e.x * _GRID)),
    'shape': (7, lambda e: e.shape),
}


VIDEO_FRAMES = 'video_frames'  # frames of config.dataset's videos, labelled by video
TASK_NAMES = (*TASKS, VIDEO_FRAMES)


def video_frame_images(ds_cfg: ml_collections.ConfigDict, split: str,
                       num: int) -> ImageData:
  """About `num` frames of `split`'s videos ('train' or 'eval'), a few evenly spaced per
  video, labelled with the video's class; resized and centre-cropped as eval clips are."""
  tf = tf_runtime.import_tensorflow()
  from data_pipelines import dmvr_format  # pylint: disable=g-import-not-at-top
  from data_pipelines import reader, video_ops  # pylint: disable=g-import-not-at-top
  files = dmvr_format.expand_table(ds_cfg[f'{split}_table'], ds_cfg.base_dir)
  per_video = -(-num // max(reader.count_records(files), 1))
  images, labels = [], []
  for record in tf.data.TFRecordDataset(files):
    encoded, label = reader.parse_dmvr(record)
    count = tf.cast(tf.shape(encoded)[0], tf.float32)
    indices = tf.cast((tf.range(per_video, dtype=tf.float32) + 0.5) * count / per_video,
                      tf.int32)
    frames = video_ops.resize_short_side(video_ops.decode_frames(encoded, indices),
                                         ds_cfg.min_resize)
    frames = video_ops.to_uint8(video_ops.centre_crop(frames, ds_cfg.crop_size))
    # The pixels a clip hands the video model, normalised as the model does (on the host).
    images.append(np.asarray(model_inputs.normalize(frames.numpy(), ds_cfg.normalization)))
    labels += [int(label)] * per_video
  return ImageData(np.concatenate(images).astype(np.float32), np.asarray(labels, np.int32))


def make_images(num: int, *, seed: int, offset: int, resolution: int, scene,
                normalization: str, task: str = 'position') -> ImageData:
  """`num` synthetic frames (JPEG round trip, as the videos have) and their labels."""
  tf = tf_runtime.import_tensorflow()
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  frames, labels = [], []
  for i in range(offset, offset + num):
    rng = np.random.default_rng(np.random.SeedSequence([seed, _IMAGE_STREAM, i]))
    example = synthetic.image_example(rng, resolution=resolution, scene=scene)
    jpeg = synthetic.encode_frames(example.frame[None])[0]
    frames.append(tf.io.decode_jpeg(jpeg).numpy())
    labels.append(TASKS[task][1](example))
  # The image ViT takes normalised float images: the video model's normalisation, on
  # the host once for the whole (small) set.
  images = np.asarray(model_inputs.normalize(np.stack(frames), normalization), np.float32)
  return ImageData(images, np.asarray(labels, np.int32))


def make_train_step(model: ImageViT, tx: optax.GradientTransformation):
  """One jitted step of softmax cross-entropy on integer labels."""
  def loss_fn(params, images, labels):
    logits = model.apply({'params': params}, images, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

  @jax.jit
  def step(params, opt_state, images, labels):
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, acc
  return step


def accuracy(model: ImageViT, params, data: ImageData, batch_size: int = 256) -> float:
  apply = jax.jit(lambda p, x: jnp.argmax(model.apply({'params': p}, x), -1))
  hits = sum(int(np.sum(np.asarray(apply(params, data.images[i:i + batch_size]))
                        == data.labels[i:i + batch_size]))
             for i in range(0, len(data.labels), batch_size))
  return hits / len(data.labels)


def train(model: ImageViT, data: ImageData, settings: PretrainSettings):
  """AdamW with warm-up + cosine decay on random minibatches; returns (params, seconds)."""
  rng = np.random.default_rng(settings.seed)
  params = jax.jit(model.init)(jax.random.PRNGKey(settings.seed), data.images[:1])['params']
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, settings.learning_rate, max(settings.steps // 10, 1), settings.steps)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=settings.weight_decay))
  opt_state, step = tx.init(params), make_train_step(model, tx)
  start = None
  for i in range(settings.steps):
    idx = rng.choice(len(data.labels), settings.batch_size, replace=False)
    params, opt_state, loss, _ = step(params, opt_state, data.images[idx], data.labels[idx])
    if i == 0:
      jax.block_until_ready(loss)
      start = time.time()  # training time excludes compilation, as the trainer's does
  jax.block_until_ready(params)
  return params, time.time() - start


def vision_transformer_flat(params) -> Dict[str, np.ndarray]:
  """The image model's tree as google-research/vision_transformer's flat .npz names."""
  from vivit_adapter.checkpoints import merge  # pylint: disable=g-import-not-at-top
  out = {}
  for name, value in merge.flatten(jax.device_get(params)).items():
    parts = name.split('/')
    if len(parts) > 2 and parts[1].startswith('encoderblock_'):
      parts[2] = _VT_NAMES.get(parts[2], parts[2])
    out['/'.join(parts)] = np.asarray(value)
  return out


def save_npz(params, path: str) -> None:
  """Writes the checkpoint atomically (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **vision_transformer_flat(params))
  os.replace(tmp, path)


def task_data(config: ml_collections.ConfigDict, data_dir: str,
              settings: PretrainSettings) -> Tuple[ImageData, ImageData, int, Dict]:
  """(train images, held-out images, classes, where they come from) of the task."""
  if settings.task == VIDEO_FRAMES:
    ds = config.dataset
    from data_pipelines import reader  # pylint: disable=g-import-not-at-top
    world = {'resolution': ds.crop_size, 'scene': None, 'data': ds.base_dir,
             'held_out': f'frames of the {ds.eval_table} videos'}
    return (video_frame_images(ds, 'train', settings.num_train_images),
            video_frame_images(ds, 'eval', settings.num_eval_images),
            reader.resolve_num_classes(ds), world)
  if settings.task not in TASKS:
    raise ValueError(f'task={settings.task!r}; expected one of {sorted(TASK_NAMES)}.')
  resolution, scene = world_of(data_dir, config.dataset.crop_size)
  common = dict(seed=settings.seed, resolution=resolution, scene=scene,
                normalization=config.dataset.normalization, task=settings.task)
  train_data = make_images(settings.num_train_images, offset=0, **common)
  eval_data = make_images(settings.num_eval_images, offset=settings.num_train_images,
                          **common)
  world = {'resolution': resolution, 'scene': dataclasses.asdict(scene), 'data': data_dir}
  return train_data, eval_data, TASKS[settings.task][0], world


def pretrain(output: str, config: ml_collections.ConfigDict, *, data_dir: str = '',
             settings: PretrainSettings = PretrainSettings()) -> Dict:
  """Makes images, trains the image ViT, writes `output` and `<output>.json` (returned)."""
  t0 = time.time()
  train_data, eval_data, num_classes, world = task_data(config, data_dir, settings)
  model = image_model(config.model, num_classes)
  params, train_time = train(model, train_data, settings)
  save_npz(params, output)
  report = {
      'output': output, 'task': settings.task, 'num_classes': num_classes,
      'eval_top1': accuracy(model, params, eval_data),
      'train_top1': accuracy(model, params, ImageData(train_data.images[:1000],
                                                      train_data.labels[:1000])),
      'train_time_s': train_time, 'total_time_s': time.time() - t0, **world,
      'settings': dataclasses.asdict(settings),
      'model': {'hidden_size': model.hidden_size, 'patch_size': list(model.patch_size),
                **model.encoder._asdict()}}
  with open(os.path.splitext(output)[0] + '.json', 'w') as f:
    json.dump(report, f, indent=2)
  return report
