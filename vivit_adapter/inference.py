"""Inference with a trained run: load it, check it, transform a video as its evaluation
does, and score it. The library under `predict` (one video, the CLI) and `batch_predict`
(many videos, the test's views).
"""

import dataclasses
import os
from typing import List, Optional

from absl import logging
import numpy as np

from data_pipelines import cli
from data_pipelines import convert_videos
from data_pipelines import dmvr_format
from data_pipelines import fs
from data_pipelines import tf_runtime
from vivit_adapter import configs


@dataclasses.dataclass(frozen=True)
class Prediction:
  index: int
  label: str
  probability: float


@dataclasses.dataclass(frozen=True)
class Result:
  step: int
  num_classes: int
  top: List[Prediction]


def read_video(path: str, fps: float = 0.) -> np.ndarray:
  """(T, H, W, 3) uint8 frames of a video file; errors name the file."""
  if not fs.isfile(path):
    raise FileNotFoundError(f'--video={path!r} does not exist or is not a file.')
  try:
    return convert_videos.decode_video(path, fps=fps)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # PyAV raises many types (InvalidDataError, DecoderNotFoundError, ...): all mean
    # "this file is not a video we can read".
    raise ValueError(f'--video={path!r} could not be decoded as a video: '
                     f'{type(e).__name__}: {e}') from e


def eval_transform(frames: np.ndarray, ds_cfg) -> np.ndarray:
  """The training pipeline's `video_ops.eval_clip` on decoded frames -> (T, C, C, 3) uint8,
  which the model normalises itself.

  eval_clip takes encoded frames, as a record stores them; PNG is lossless, so the clip
  sees exactly the decoded pixels. Compression level 0 (stored, not deflated) keeps the
  encoding a copy.
  """
  # pylint: disable=g-import-not-at-top
  from data_pipelines import video_ops
  # pylint: enable=g-import-not-at-top
  tf = tf_runtime.import_tensorflow()
  encoded = tf.map_fn(lambda f: tf.io.encode_png(f, compression=0),
                      tf.convert_to_tensor(frames), fn_output_signature=tf.string)
  return video_ops.eval_clip(encoded, ds_cfg).numpy()


def label_names(ds_cfg, num_classes: int, label_map: str = '') -> Optional[List[str]]:
  """Class names from `label_map`, else the run's dataset label map; None if unavailable."""
  path = (label_map or ds_cfg.label_map or
          os.path.join(ds_cfg.base_dir, dmvr_format.LABEL_MAP_FILE))
  if label_map and not fs.exists(label_map):
    raise FileNotFoundError(f'--label_map={label_map!r} does not exist.')
  if not fs.exists(path):
    logging.warning('No label map at %s: printing class indices.', path)
    return None
  names = dmvr_format.read_label_map(path)
  if len(names) != num_classes:
    logging.warning('%s names %d classes but the model has %d: printing class indices.',
                    path, len(names), num_classes)
    return None
  return names


def load_run(workdir: str, step: int = -1, config=None):
  """(config, model, params, step) of a trained run; num_classes is read off the head."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter import checkpoints
  from vivit_adapter import models
  from vivit_adapter.checkpoints import workdir as workdir_checkpoints
  # pylint: enable=g-import-not-at-top
  config = config or configs.load_saved(workdir)
  _, step = workdir_checkpoints.find_checkpoint_step(workdir, step)
  params = checkpoints.restore_workdir_params(workdir, step)
  if 'output_projection' not in params:
    raise ValueError(f'The checkpoint in {workdir} has no output_projection (a '
                     f'classifier head); its top-level names are {sorted(params)}.')
  num_classes = params['output_projection']['kernel'].shape[-1]
  model = models.create_model(config.model, num_classes, config.dataset.normalization)
  return config, model, params, step


def check_fits(model, params, clip: np.ndarray, workdir: str) -> None:
  """The checkpoint's parameters have the shapes the saved config's model needs.

  Raises:
    cli.CheckpointMismatchError: a summary line (which sizes differ), then the tensors.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from vivit_adapter.checkpoints import merge
  # pylint: enable=g-import-not-at-top
  video = jax.ShapeDtypeStruct((1,) + clip.shape, clip.dtype)
  wanted = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v), video)['params']
  model_shapes = {k: tuple(v.shape) for k, v in merge.flatten(wanted).items()}
  saved = {k: tuple(np.shape(v)) for k, v in merge.flatten(params).items()}
  missing = [k for k in model_shapes if k not in saved]
  unexpected = [k for k in saved if k not in model_shapes]
  mismatched = [k for k in model_shapes if k in saved and saved[k] != model_shapes[k]]
  if missing or unexpected or mismatched:
    raise cli.CheckpointMismatchError(merge.mismatch_message(
        f'in {workdir}', model_shapes, saved, missing, unexpected, mismatched).replace(
            'Check that config.model', 'Its config.json does not describe it; check that '
            'config.model', 1))


def check_finite(params, workdir: str, step: int) -> None:
  """A checkpoint with NaN or inf parameters answers nothing: refused in one line."""
  from vivit_adapter.train_lib import finite  # pylint: disable=g-import-not-at-top
  bad = finite.nonfinite_names(params)
  if bad:
    raise cli.DivergedError(
        f'The checkpoint of step {step} in {workdir} is not finite ({finite.describe(bad)}): '
        'its training diverged. Use an earlier --step, or retrain with a lower '
        'config.lr_configs.base_learning_rate.')


def probabilities(model, params, clip: np.ndarray) -> np.ndarray:
  """Softmax over classes for one (T, C, C, 3) clip."""
  import jax  # pylint: disable=g-import-not-at-top
  logits = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))(
      params, clip[np.newaxis])
  return np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1)[0])


def top_k(probs: np.ndarray, k: int, names: Optional[List[str]]) -> List[Prediction]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [Prediction(int(i), names[i] if names else f'class_{i}', float(probs[i]))
          for i in order]


def predict(workdir: str, video: str, step: int = -1, k: int = 5, fps: float = 0.,
            label_map: str = '') -> Result:
  """The `k` most probable classes of `video` under the run in `workdir`.

  Everything the user gave is checked (and the video decoded) before the checkpoint is
  read: a typo costs no checkpoint load.
  """
  if not fs.isfile(video):
    raise FileNotFoundError(f'--video={video!r} does not exist or is not a file.')
  if label_map and not fs.exists(label_map):
    raise FileNotFoundError(f'--label_map={label_map!r} does not exist.')
  config = configs.load_saved(workdir)
  clip = eval_transform(read_video(video, fps), config.dataset)
  config, model, params, step = load_run(workdir, step, config)
  check_fits(model, params, clip, workdir)
  check_finite(params, workdir, step)
  probs = probabilities(model, params, clip)
  names = label_names(config.dataset, len(probs), label_map)
  return Result(step, len(probs), top_k(probs, k, names))
