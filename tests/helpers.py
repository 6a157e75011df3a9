"""Helpers shared by the test files: tiny model configs, dotted-key overrides, tiny
models' forward passes, and reading DMVR records back. (Subprocess runs of the CLIs and
the tiny dataset of the trainer tests live in trainer_utils.py.)"""

import flax
import jax
import numpy as np
import tensorflow as tf

from data_pipelines import dmvr_format
from vivit_adapter import configs


def set_keys(node, **dotted):
  """Sets `node['a']['b'] = value` for every `a.b=value`; a typo raises (locked)."""
  for key, value in dotted.items():
    *path, last = key.split('.')
    target = node
    for part in path:
      target = target[part]
    target[last] = value
  return node


def tiny_model(model_config, *, width: int = 32, patches=(4, 4, 2), layers: int = 2,
               heads: int = 2, mlp: int = 64, **overrides):
  """`config.model` made tiny in place: both encoders `layers` deep; then overrides."""
  model_config.hidden_size = width
  model_config.patches.size = tuple(patches)
  for enc in (model_config.spatial_transformer, model_config.temporal_transformer):
    enc.num_layers, enc.num_heads, enc.mlp_dim = layers, heads, mlp
  return set_keys(model_config, **overrides)


def tiny_config(**overrides):
  """A base config whose model is tiny (see `tiny_model`); overrides are dotted keys of
  the whole config."""
  config = configs.base_config()
  tiny_model(config.model)
  return set_keys(config, **overrides)


def random_video(shape=(2, 8, 16, 16, 3), seed=7):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, minval=-1.0, maxval=1.0)


def init(model, video, seed=0):
  return jax.jit(model.init)(jax.random.PRNGKey(seed), video)['params']


def abstract_params(model, video, seed=0):
  """The shapes and dtypes `init` would give, without compiling or running it: enough
  to lower and compile a step (compile-only memory figures) or compare tree structures."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(seed), video)['params']


def run(model, params, video, **kwargs):
  """Jitted forward pass: op-by-op dispatch is far slower on CPU."""
  return jax.jit(lambda p, v: model.apply({'params': p}, v, **kwargs))(params, video)


def perturbed_params(model, video, seed=0, scale=0.05):
  """Initialised params plus noise, so zero-initialised parts (head, CLS) matter."""
  params = init(model, video, seed)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, leaves)


def read_dmvr_records(directory: str, split: str):
  """Every record of `directory/<split>.tfrecord@*` as a dict: label, label_text,
  video_id and the encoded frames (a list of bytes), in shard order."""
  records = []
  for path in dmvr_format.expand_table(f'{split}.tfrecord@*', str(directory)):
    for raw in tf.data.TFRecordDataset(path):
      ctx, seq = tf.io.parse_single_sequence_example(
          raw, context_features={
              dmvr_format.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
              dmvr_format.LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string),
              dmvr_format.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string)},
          sequence_features={dmvr_format.FRAMES_KEY: tf.io.FixedLenSequenceFeature(
              [], tf.string)})
      records.append({
          'label': int(ctx[dmvr_format.LABEL_KEY]),
          'label_text': ctx[dmvr_format.LABEL_TEXT_KEY].numpy().decode(),
          'video_id': ctx[dmvr_format.VIDEO_ID_KEY].numpy().decode(),
          'frames': list(seq[dmvr_format.FRAMES_KEY].numpy())})
  return records


def decode_frames(encoded) -> np.ndarray:
  return np.stack([tf.io.decode_jpeg(f).numpy() for f in encoded])


@flax.struct.dataclass
class TrainState:
  """The fields of the trainer's state that checkpointing saves, for tests that make one
  by hand."""
  params: dict
  opt_state: dict
  step: jax.Array
  rng: jax.Array


def fake_summary(top1, top5, seconds, cpu, curve=()):
  """A finished run's summary as studies/runs.py reads it (the studies' report tests):
  test top-1/top-5, training seconds (wall, CPU) and an eval curve of (wall, CPU, top-1)."""
  return {'config': {'dataset': {'num_frames': 8}, 'model': {
      'adapter': {'type': 'attention', 'hidden_size': 32}, 'freeze_spatial': True},
      'init_from': {'checkpoint_path': 'x'}, 'feature_cache': {'dir': ''}},
          'step': 2, 'start': 'fake', 'params': {'trainable': 1, 'frozen': 2},
          'frozen_modules': [], 'train_time_s': seconds, 'train_cpu_s': cpu,
          'test': {'top1': top1, 'top5': top5}, 'eval': {'top1': top1 / 2, 'top5': 0.9},
          'eval_curve': [{'step': i, 'train_time_s': t, 'train_cpu_s': c, 'top1': a}
                         for i, (t, c, a) in enumerate(curve)]}
