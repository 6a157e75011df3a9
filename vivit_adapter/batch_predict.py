"""`predict --videos`: many videos scored with the test's views, written as JSONL or CSV.

  python -m vivit_adapter.predict --workdir=RUN --videos=DIR --out=preds.jsonl

--videos is a video file, a folder (searched recursively for VIDEO_EXTENSIONS), a glob
(`clips/*/*.mp4`, `**` allowed) or a CSV of paths (the column named path/video/file, else
the first; relative paths are relative to the CSV's folder). Each video gets the run's
multi-view test transform (video_ops.test_views: num_test_clips evenly spaced clips x
num_test_crops crops, or --num_clips/--num_crops), its views go through the model in
device batches of --batch_size videos, and the class probabilities of its views are
averaged (steps.view_probabilities, the test step's rule). Videos are decoded by
--workers threads while the device works; a video that cannot be read gets a line with
its error and the others go on. The output format follows --out's extension.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import glob
import json
import os
import sys
import time
from typing import Iterator, List, Optional, Tuple

import numpy as np

from data_pipelines import cli
from data_pipelines import fs
from vivit_adapter import configs
from vivit_adapter import inference

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg',
                    '.wmv', '.flv', '.gif')
OUTPUT_FORMATS = ('.jsonl', '.csv')
CSV_PATH_COLUMNS = ('path', 'video', 'file', 'filename', 'video_path')
_GLOB_CHARS = '*?['


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One video's line: its top classes, or why it could not be scored."""
  path: str
  top: Optional[List[inference.Prediction]] = None
  error: str = ''


@dataclasses.dataclass(frozen=True)
class Counts:
  scored: int
  failed: int
  seconds: float = dataclasses.field(default=0., compare=False)  # decoding + scoring


# ----------------------------------------------------------------------------------------
# Which videos.
# ----------------------------------------------------------------------------------------

def list_videos(spec: str) -> List[str]:
  """The videos that --videos names, in a stable order."""
  if spec.lower().endswith('.csv') and fs.isfile(spec):
    paths = csv_paths(spec)
  elif fs.isdir(spec):
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(spec)
                   for name in names if name.lower().endswith(VIDEO_EXTENSIONS))
  elif any(c in spec for c in _GLOB_CHARS):
    paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
  elif fs.isfile(spec):
    paths = [spec]
  else:
    raise FileNotFoundError(f'--videos={spec!r} is not a video file, a folder, a glob '
                            'or a CSV of paths.')
  if not paths:
    raise cli.ConfigError(f'--videos={spec!r} names no videos (a folder is searched for '
                          f'{", ".join(VIDEO_EXTENSIONS)}).')
  return paths


def csv_paths(path: str) -> List[str]:
  """The paths of a CSV: the column named one of CSV_PATH_COLUMNS (a header row), else
  the first column of every row; relative paths are relative to the CSV's folder."""
  with fs.open(path) as f:
    rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
  column = 0
  if rows:
    header = [cell.strip().lower() for cell in rows[0]]
    named = [i for i, cell in enumerate(header) if cell in CSV_PATH_COLUMNS]
    if named:
      column, rows = named[0], rows[1:]
  base = os.path.dirname(path)
  out = []
  for i, row in enumerate(rows):
    if column >= len(row) or not row[column].strip():
      raise cli.ConfigError(f'{path}: row {i + 1} has no path in column {column + 1}.')
    p = row[column].strip()
    out.append(p if os.path.isabs(p) or fs.is_url(p) else os.path.join(base, p))
  return out


def output_format(out: str) -> str:
  ext = os.path.splitext(out)[1].lower()
  if ext not in OUTPUT_FORMATS:
    raise cli.ConfigError(f'--out={out!r}: the extension picks the format; use one of '
                          f'{", ".join(OUTPUT_FORMATS)}.')
  return ext


# ----------------------------------------------------------------------------------------
# Decoding (threads) and scoring (device batches).
# ----------------------------------------------------------------------------------------

def views_config(ds_cfg, num_clips: int = 0, num_crops: int = 0):
  """The run's dataset config with the test views overridden (0 keeps the run's)."""
  ds_cfg = ds_cfg.copy_and_resolve_references()
  ds_cfg.num_test_clips = num_clips or ds_cfg.num_test_clips
  ds_cfg.num_test_crops = num_crops or ds_cfg.num_test_crops
  return ds_cfg


def load_views(path: str, ds_cfg, fps: float) -> np.ndarray:
  """(V, T, C, C, 3) uint8: the test transform on the decoded frames (PNG-encoded, as
  inference.eval_transform does, so the transform sees exactly the decoded pixels)."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import convert_videos
  from data_pipelines import tf_runtime
  from data_pipelines import video_ops
  # pylint: enable=g-import-not-at-top
  tf = tf_runtime.import_tensorflow()
  frames = convert_videos.decode_video(path, fps=fps)
  encoded = tf.map_fn(lambda f: tf.io.encode_png(f, compression=0),
                      tf.convert_to_tensor(frames), fn_output_signature=tf.string)
  return video_ops.test_views(encoded, ds_cfg).numpy()


def decoded(paths: List[str], load, workers: int) -> Iterator[Tuple[str, object]]:
  """(path, views or the exception) in the order of `paths`, `workers` decoding ahead.

  At most 2 * workers videos are decoded and waiting at a time, so memory does not grow
  with the number of videos.
  """
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    pending = collections.deque()
    todo = iter(paths)
    for path in todo:
      pending.append((path, pool.submit(load, path)))
      if len(pending) >= 2 * workers:
        break
    while pending:
      path, future = pending.popleft()
      nxt = next(todo, None)
      if nxt is not None:
        pending.append((nxt, pool.submit(load, nxt)))
      try:
        yield path, future.result()
      except ImportError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        yield path, e


def make_scorer(model, params, batch_size: int, view_shape):
  """(videos, V, T, C, C, 3) uint8 with at most batch_size videos -> their averaged class
  probabilities. Batches are padded to batch_size, so the function compiles once."""
  # pylint: disable=g-import-not-at-top
  import jax
  from vivit_adapter.train_lib import steps
  # pylint: enable=g-import-not-at-top

  @jax.jit
  def scores(p, views):
    b, v = views.shape[:2]
    logits = model.apply({'params': p}, views.reshape((b * v,) + views.shape[2:]),
                         train=False)
    return steps.view_probabilities(logits, b)

  def run(views: np.ndarray) -> np.ndarray:
    n = len(views)
    padded = np.zeros((batch_size,) + tuple(view_shape), np.uint8)
    padded[:n] = views
    return np.asarray(scores(params, padded))[:n]

  return run


def batches(items, batch_size: int):
  """Groups (path, views or error) into lists whose good videos number batch_size; the
  broken ones ride along in the list where they occurred (output order is kept)."""
  group, good = [], 0
  for item in items:
    group.append(item)
    good += not isinstance(item[1], BaseException)
    if good == batch_size:
      yield group
      group, good = [], 0
  if group:
    yield group


# ----------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------

class Writer:
  """Lines of JSON ({'path', 'top_k': [{'index', 'label', 'score'}]} or {'path',
  'error'}) or CSV rows (path, error, label_1, score_1, ..., label_k, score_k)."""

  def __init__(self, path: str, k: int):
    self.format = output_format(path)
    self.file = fs.open(path, 'w')
    self.k = k
    if self.format == '.csv':
      self.csv = csv.writer(self.file, lineterminator='\n')
      self.csv.writerow(['path', 'error'] + [f'{w}_{i}' for i in range(1, k + 1)
                                             for w in ('label', 'score')])

  def write(self, outcome: Outcome) -> None:
    top = outcome.top or []
    if self.format == '.jsonl':
      line = {'path': outcome.path}
      if outcome.error:
        line['error'] = outcome.error
      else:
        line['top_k'] = [{'index': p.index, 'label': p.label, 'score': p.probability}
                         for p in top]
      self.file.write(json.dumps(line) + '\n')
    else:
      cells = [c for p in top for c in (p.label, f'{p.probability:.6g}')]
      self.csv.writerow([outcome.path, outcome.error] + cells +
                        [''] * (2 * self.k - len(cells)))

  def close(self) -> None:
    self.file.close()


# ----------------------------------------------------------------------------------------
# The whole command.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Options:
  step: int = -1
  k: int = 5
  fps: float = 0.
  label_map: str = ''
  num_clips: int = 0
  num_crops: int = 0
  batch_size: int = 8
  workers: int = 4
  progress: bool = True


def run(workdir: str, videos: str, out: str, opts: Options = Options()) -> Counts:
  """Scores every video of `videos` into `out`; returns how many were scored and failed.

  The inputs (the video list, the output format, the label map) are checked before the
  checkpoint is read.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  paths = list_videos(videos)
  output_format(out)
  if opts.label_map and not fs.exists(opts.label_map):
    raise FileNotFoundError(f'--label_map={opts.label_map!r} does not exist.')
  config = configs.load_saved(workdir)
  ds_cfg = views_config(config.dataset, opts.num_clips, opts.num_crops)
  config, model, params, step = inference.load_run(workdir, opts.step, config)
  clip_shape = (ds_cfg.num_frames, ds_cfg.crop_size, ds_cfg.crop_size, 3)
  inference.check_fits(model, params, np.zeros(clip_shape, np.uint8), workdir)
  inference.check_finite(params, workdir, step)  # a diverged model scores nothing
  num_classes = params['output_projection']['kernel'].shape[-1]
  names = inference.label_names(config.dataset, num_classes, opts.label_map)
  num_views = ds_cfg.num_test_clips * ds_cfg.num_test_crops
  score = make_scorer(model, params, opts.batch_size, (num_views,) + clip_shape)
  writer = Writer(out, min(opts.k, num_classes))
  scored = failed = 0
  start = time.time()
  bar = tqdm.tqdm(total=len(paths), unit='video', file=sys.stderr, dynamic_ncols=True,
                  disable=not opts.progress or not sys.stderr.isatty())
  try:
    items = decoded(paths, lambda p: load_views(p, ds_cfg, opts.fps), opts.workers)
    for group in batches(items, opts.batch_size):
      good = [v for _, v in group if not isinstance(v, BaseException)]
      probs = iter(score(np.stack(good)) if good else [])
      for path, views in group:
        if isinstance(views, BaseException):
          failed += 1
          writer.write(Outcome(path, error=f'{type(views).__name__}: {cli.message(views)}'))
        else:
          scored += 1
          writer.write(Outcome(path, top=inference.top_k(next(probs), opts.k, names)))
      bar.update(len(group))
  finally:
    bar.close()
    writer.close()
  return Counts(scored, failed, time.time() - start)
