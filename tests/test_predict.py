"""vivit_adapter.predict: a tiny trained run's workdir, a small mp4, the CLI's output."""

import csv
import json
import os
import re
import subprocess
import sys

import av
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from data_pipelines import cli
from data_pipelines import video_ops
from tests import helpers
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['wave', 'jump', 'run', 'sit', 'clap']
STEP = 7


def _tiny_config(label_map: str):
  config = configs.base_config()
  helpers.tiny_model(config.model, patches=(8, 8, 2), layers=1)
  ds = config.dataset
  ds.num_frames, ds.stride = 4, 3
  ds.min_resize, ds.crop_size = 24, 16
  ds.normalization = 'imagenet'  # not the default: the run's choice must be used
  ds.label_map = label_map
  return config


def _save_checkpoint(workdir: str, step: int, params) -> None:
  mngr = ocp.CheckpointManager(
      f'{workdir}/checkpoints', item_names=('params', 'state', 'meta'),
      options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      state=ocp.args.StandardSave({'step': np.int64(step)}),
      meta=ocp.args.JsonSave({'step': step})))
  mngr.wait_until_finished()
  mngr.close()


def _write_mp4(path: str, num_frames: int = 20, width: int = 40, height: int = 30) -> None:
  """A moving gradient with a bright square: content that survives compression."""
  y, x = np.mgrid[0:height, 0:width]
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=10)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for t in range(num_frames):
      frame = np.stack([(x * 6 + t * 9) % 256, (y * 8) % 256,
                        np.full_like(x, 40 + 10 * t)], -1).astype(np.uint8)
      frame[5:15, 2 + t:12 + t] = 255
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, video path, config, params) of a tiny run with random, non-zero weights."""
  root = tmp_path_factory.mktemp('predict')
  label_map = str(root / 'labels.txt')
  with open(label_map, 'w') as f:
    f.write('\n'.join(NAMES) + '\n')
  config = _tiny_config(label_map)
  workdir = str(root / 'run')
  os.makedirs(workdir)
  configs.save(config, workdir)
  model = models.create_model(config.model, len(NAMES))
  # Shapes only (no compute), then random values for every weight: the zero-initialised
  # head would give every class the same probability.
  video_shape = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), np.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          video_shape)['params']
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype),
                        shapes)
  _save_checkpoint(workdir, STEP, params)
  video = str(root / 'clip.mp4')
  _write_mp4(video)
  return workdir, video, config, params


def _independent_probabilities(video, config, params):
  """Decode with PyAV, PNG-encode, run the training pipeline's own eval_clip, apply."""
  with av.open(video) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  encoded = tf.constant([tf.io.encode_png(f).numpy() for f in frames])
  clip = video_ops.eval_clip(encoded, config.dataset).numpy()  # uint8 pixels
  # The run's 'imagenet' normalisation on the host, written out here (predict's model
  # normalises on the device, models/inputs.py), into a model that takes it as is.
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  clip = ((clip / 255.0 - mean) / std).astype(np.float32)
  model = models.create_model(config.model, len(NAMES))
  logits = np.asarray(model.apply({'params': params}, clip[None], train=False),
                      np.float64)[0]
  e = np.exp(logits - logits.max())
  return e / e.sum()


def test_predict_matches_eval_pipeline_and_model(run):
  workdir, video, config, params = run
  result = predict.predict(workdir, video, k=3)
  probs = _independent_probabilities(video, config, params)
  expected = np.argsort(-probs)[:3]
  assert result.step == STEP and result.num_classes == len(NAMES)
  assert [p.index for p in result.top] == list(expected)
  assert [p.label for p in result.top] == [NAMES[i] for i in expected]
  np.testing.assert_allclose([p.probability for p in result.top], probs[expected],
                             rtol=1e-4, atol=1e-6)
  assert probs.max() - probs.min() > 0.05  # the check above is not between equal values


def test_cli_prints_sorted_top_k(run):
  workdir, video, config, params = run
  out = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.predict', f'--workdir={workdir}',
       f'--video={video}', '--top_k=4'], cwd=REPO, capture_output=True, text=True,
      timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  # Only the result: no INFO lines of orbax (dozens per restore) or of ours.
  assert not re.search(r'^I\d{4} ', out.stderr, re.M), out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0] == f'{video}: top 4 of 5 classes ({workdir}, step {STEP})'
  rows = [re.fullmatch(r'\s*(\d+)\. (\d\.\d{6})  (\S+)', line) for line in lines[1:]]
  assert len(rows) == 4 and all(rows), lines
  ranks = [int(r.group(1)) for r in rows]
  probs = [float(r.group(2)) for r in rows]
  assert ranks == [1, 2, 3, 4]
  assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
  assert probs == sorted(probs, reverse=True)
  expected = _independent_probabilities(video, config, params)
  order = np.argsort(-expected)[:4]
  assert [r.group(3) for r in rows] == [NAMES[i] for i in order]
  np.testing.assert_allclose(probs, expected[order], atol=2e-6)


def test_missing_video(run):
  workdir, _, _, _ = run
  missing = os.path.join(os.path.dirname(workdir), 'nope.mp4')
  with pytest.raises(FileNotFoundError, match=re.escape(f"--video={missing!r} does not")):
    predict.predict(workdir, missing)


def test_undecodable_video(run, tmp_path):
  workdir, _, _, _ = run
  bad = tmp_path / 'bad.mp4'
  bad.write_text('this is not a video')
  with pytest.raises(ValueError, match=re.escape(f"--video={str(bad)!r} could not be "
                                                 'decoded as a video')):
    predict.predict(workdir, str(bad))


def test_workdir_without_checkpoint(run, tmp_path):
  _, video, config, _ = run
  configs.save(config, str(tmp_path))
  with pytest.raises(FileNotFoundError, match='No orbax checkpoint found in'):
    predict.predict(str(tmp_path), video)


def test_cli_error_is_one_line_and_checks_the_video_first(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.predict', f'--workdir={tmp_path}',
       f'--video={tmp_path}/x.mp4'], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert out.returncode == 2  # cli.USAGE_ERROR
  assert out.stderr == (f"vivit_adapter.predict: error: --video='{tmp_path}/x.mp4' does not "
                        'exist or is not a file.\n')


def test_inputs_are_checked_before_the_checkpoint_is_read(run, monkeypatch, tmp_path):
  workdir, video, _, _ = run
  from vivit_adapter import checkpoints  # pylint: disable=g-import-not-at-top

  def never(*args, **kwargs):
    raise AssertionError('the checkpoint was read before the inputs were checked')
  monkeypatch.setattr(checkpoints, 'restore_workdir_params', never)
  with pytest.raises(FileNotFoundError, match='--video='):
    predict.predict(workdir, str(tmp_path / 'missing.mp4'))
  with pytest.raises(FileNotFoundError, match='--label_map='):
    predict.predict(workdir, video, label_map=str(tmp_path / 'missing.txt'))
  bad = tmp_path / 'bad.mp4'
  bad.write_text('not a video')
  with pytest.raises(ValueError, match='could not be decoded as a video'):
    predict.predict(workdir, str(bad))


def test_config_json_that_does_not_describe_the_checkpoint(run, tmp_path):
  # What an overwritten config.json used to cause: a one-line mismatch with its sizes,
  # not flax's ScopeParamShapeError.
  workdir, video, config, _ = run
  other = str(tmp_path / 'other')
  os.makedirs(other)
  os.symlink(os.path.join(workdir, 'checkpoints'), os.path.join(other, 'checkpoints'))
  config.unlock()
  wider = config.copy_and_resolve_references()
  config.lock()
  wider.model.hidden_size = 48
  configs.save(wider, other)
  with pytest.raises(cli.CheckpointMismatchError) as e:
    predict.predict(other, video)
  assert str(e.value).splitlines()[0].startswith(
      f'Checkpoint in {other} does not fit the model: 32 in the checkpoint where the model '
      'has 48 (')


def test_label_names_fall_back_to_indices(tmp_path):
  config = _tiny_config(str(tmp_path / 'labels.txt'))
  (tmp_path / 'labels.txt').write_text('a\nb\n')
  assert predict.label_names(config.dataset, 2) == ['a', 'b']
  assert predict.label_names(config.dataset, 3) is None  # wrong count: indices
  config.dataset.label_map, config.dataset.base_dir = '', str(tmp_path / 'none')
  assert predict.label_names(config.dataset, 2) is None
  top = predict.top_k(np.array([0.1, 0.6, 0.3]), 2, None)
  assert [(p.index, p.label) for p in top] == [(1, 'class_1'), (2, 'class_2')]
  with pytest.raises(FileNotFoundError, match='--label_map='):
    predict.label_names(config.dataset, 2, label_map=str(tmp_path / 'missing.txt'))


# ----------------------------------------------------------------------------------------
# --videos: many videos with the test's views (vivit_adapter/batch_predict.py).
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def videos(run, tmp_path_factory):
  """A folder of two different videos (one in a sub-folder), a broken one and a text file."""
  root = tmp_path_factory.mktemp('videos')
  os.makedirs(root / 'sub')
  _write_mp4(str(root / 'a.mp4'))
  _write_mp4(str(root / 'sub' / 'b.mp4'), num_frames=26, width=36, height=44)
  (root / 'broken.mp4').write_text('this is not a video')
  (root / 'notes.txt').write_text('not listed: not a video extension')
  return root


def _independent_view_probabilities(video, config, params, clips, crops):
  """PyAV decode, PNG, the test pipeline's own test_views, apply, softmax, mean of views."""
  with av.open(video) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  ds_cfg = config.dataset.copy_and_resolve_references()
  ds_cfg.num_test_clips, ds_cfg.num_test_crops = clips, crops
  encoded = tf.constant([tf.io.encode_png(f).numpy() for f in frames])
  views = video_ops.test_views(encoded, ds_cfg).numpy()
  assert views.shape[0] == clips * crops
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  views = ((views / 255.0 - mean) / std).astype(np.float32)
  model = models.create_model(config.model, len(NAMES))
  logits = np.asarray(model.apply({'params': params}, views, train=False), np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).mean(axis=0)


def _check_top(row_top, video, config, params, clips, crops, k):
  probs = _independent_view_probabilities(video, config, params, clips, crops)
  order = np.argsort(-probs)[:k]
  assert [t['label'] for t in row_top] == [NAMES[i] for i in order]
  np.testing.assert_allclose([float(t['score']) for t in row_top], probs[order],
                             rtol=1e-4, atol=1e-6)
  assert probs[order[0]] - probs.min() > 0.02  # not a comparison of equal values


def test_many_videos_use_the_test_views_and_report_a_broken_one(run, videos, tmp_path):
  workdir, _, config, params = run
  from vivit_adapter import batch_predict  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'preds.jsonl')
  counts = batch_predict.run(workdir, str(videos), out, batch_predict.Options(
      k=3, num_clips=2, num_crops=3, batch_size=2, workers=2, progress=False))
  assert counts == batch_predict.Counts(scored=2, failed=1)
  with open(out) as f:
    rows = [json.loads(line) for line in f]
  assert [r['path'] for r in rows] == [str(videos / n) for n in ('a.mp4', 'broken.mp4',
                                                                  'sub/b.mp4')]
  assert set(rows[1]) == {'path', 'error'}
  assert rows[1]['error'].startswith('InvalidDataError: ')
  for row in (rows[0], rows[2]):
    _check_top(row['top_k'], row['path'], config, params, clips=2, crops=3, k=3)
  assert rows[0]['top_k'] != rows[2]['top_k']  # two videos, two results


def test_cli_csv_in_csv_out_default_views_and_partial_failure_exit(run, videos, tmp_path):
  workdir, _, config, params = run
  listing = tmp_path / 'list.csv'
  # A header names the path column; relative paths are relative to the CSV's folder.
  listing.write_text(f'label,path\nx,{videos}/sub/b.mp4\ny,{os.path.relpath(videos / "broken.mp4", tmp_path)}\n'
                     f'z,{videos}/a.mp4\n')
  out = str(tmp_path / 'preds.csv')
  proc = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.predict', f'--workdir={workdir}',
       f'--videos={listing}', f'--out={out}', '--top_k=2', '--batch_size=3'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == cli.DATA_ERROR, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[-1] == (
      f'vivit_adapter.predict: error: 1 of 3 videos could not be read (their lines in {out} '
      'say why); the other 2 are scored.')
  with open(out, newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['path', 'error', 'label_1', 'score_1', 'label_2', 'score_2']
  assert [r['path'] for r in rows] == [f'{videos}/sub/b.mp4',
                                       str(tmp_path / os.path.relpath(videos / 'broken.mp4',
                                                                      tmp_path)),
                                       f'{videos}/a.mp4']
  assert rows[1]['error'].startswith('InvalidDataError: ') and rows[1]['label_1'] == ''
  for row in (rows[0], rows[2]):  # the run's own views: 4 clips x 3 crops
    assert row['error'] == ''
    top = [{'label': row[f'label_{i}'], 'score': row[f'score_{i}']} for i in (1, 2)]
    _check_top(top, row['path'], config, params, clips=config.dataset.num_test_clips,
               crops=config.dataset.num_test_crops, k=2)


def test_video_lists_from_a_folder_a_glob_and_a_csv(videos, tmp_path):
  from vivit_adapter import batch_predict  # pylint: disable=g-import-not-at-top
  everything = [str(videos / n) for n in ('a.mp4', 'broken.mp4', 'sub/b.mp4')]
  assert batch_predict.list_videos(str(videos)) == everything
  assert batch_predict.list_videos(f'{videos}/**/*.mp4') == everything
  assert batch_predict.list_videos(f'{videos}/*.mp4') == everything[:2]
  assert batch_predict.list_videos(str(videos / 'a.mp4')) == everything[:1]
  listing = tmp_path / 'plain.csv'
  listing.write_text('clips/x.mp4\n/abs/y.avi\n\n')  # no header: the first column
  assert batch_predict.list_videos(str(listing)) == [str(tmp_path / 'clips/x.mp4'),
                                                     '/abs/y.avi']
  with pytest.raises(FileNotFoundError, match='is not a video file, a folder, a glob'):
    batch_predict.list_videos(str(tmp_path / 'nothing'))
  with pytest.raises(cli.ConfigError, match='names no videos'):
    batch_predict.list_videos(f'{tmp_path}/*.mkv')
  with pytest.raises(cli.ConfigError, match=re.escape("--out='p.txt': the extension picks")):
    batch_predict.output_format('p.txt')


def test_cli_takes_one_of_video_and_videos(run, tmp_path):
  workdir, video, _, _ = run
  for args in ([f'--video={video}', f'--videos={video}', '--out=x.jsonl'],
               [f'--videos={video}']):
    proc = subprocess.run(
        [sys.executable, '-m', 'vivit_adapter.predict', f'--workdir={workdir}', *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == cli.USAGE_ERROR, proc.stderr[-2000:]
    assert proc.stderr.startswith('vivit_adapter.predict: error: '), proc.stderr
