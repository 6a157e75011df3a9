"""Data, workdirs and checkpoints on a non-local file system: TensorFlow's ram://.

Cloud runs keep everything on gs://, which needs the network. ram:// is a URL scheme that
TensorFlow's file system layer (tf.io.gfile, tf.data) serves from memory, in this process
only, so the runs here are in-process. Every file the project reads or writes on a user
path goes through that layer (`data_pipelines.fs`), so what works on ram:// takes the
same code path on gs://.

Not exercised offline: orbax's own reads and writes. orbax stores arrays through
TensorStore, whose drivers reach local files and gs:// only (orbax takes any other string
for a local path), and etils.epath, its directory layer, knows gs/s3/az/hf but not ram://.
So here the one function that hands directories to orbax
(`checkpoints.workdir.orbax_directory`) maps ram://X to a local mirror, and `publish`
copies what orbax wrote there to ram://X, where on gs:// orbax would have written it.
Everything else is read and written on ram:// itself: shards, metadata, label map,
config.json, history, summary, curves, TensorBoard events, finding checkpoints and
detecting their format, npz and msgpack init checkpoints, converter input and output.
"""

import io
import json
import os

import flax
import numpy as np
import pytest
import tensorflow as tf

import data_pipelines
from data_pipelines import convert_videos
from data_pipelines import fs
from data_pipelines import validate
from tests import test_checkpoints_load as load_cases
from tests import test_convert_videos as video_cases
from tests import trainer_utils as tu
from vivit_adapter import configs
from vivit_adapter import predict
from vivit_adapter.checkpoints import load
from vivit_adapter.checkpoints import workdir as run_checkpoints
from vivit_adapter.train_lib import checkpointing
from vivit_adapter.train_lib import reporting
from vivit_adapter.train_lib import trainer

ROOT = 'ram://remote_paths'
RUNS = f'{ROOT}/runs'


@pytest.fixture(scope='module')
def data():
  return tu.make_dataset(f'{ROOT}/data')


def test_fs_leaves_urls_alone_and_writes_atomically():
  assert fs.abspath('gs://bucket/run') == 'gs://bucket/run'
  assert fs.abspath('run') == os.path.join(os.getcwd(), 'run')
  fs.atomic_write(f'{ROOT}/a/b.json', '{"x": 1}')
  fs.atomic_write(f'{ROOT}/a/c.bin', b'\x00\x01')
  assert fs.listdir(f'{ROOT}/a') == ['b.json', 'c.bin']  # no .tmp left behind
  assert fs.glob(f'{ROOT}/a/*.json') == [f'{ROOT}/a/b.json']
  with fs.open(f'{ROOT}/a/c.bin', 'rb') as f:
    assert f.read() == b'\x00\x01'
  assert fs.isdir(f'{ROOT}/a') and fs.isfile(f'{ROOT}/a/b.json')


def test_checkpoints_go_to_orbax_as_absolute_paths_or_gs_urls():
  assert checkpointing.checkpoint_dir('gs://bucket/run') == 'gs://bucket/run/checkpoints'
  assert checkpointing.checkpoint_dir('run') == os.path.join(os.getcwd(), 'run', 'checkpoints')
  with pytest.raises(ValueError, match='ram://x/checkpoints: orbax checkpoints can live on '
                                       'local paths or gs:// only'):
    checkpointing.checkpoint_dir('ram://x')


def test_dataset_on_ram_validates_and_feeds_training_and_evaluation(data, capsys):
  assert {'metadata.json', 'label_map.txt', 'train.tfrecord-00000-of-00002'} <= set(
      fs.listdir(data))
  assert validate.validate_tables([f'{data}/train.tfrecord@2', f'{data}/test.tfrecord@*']) == 0
  out = capsys.readouterr().out
  assert f'{data}/train.tfrecord@2: ' in out and 'in 2 shard(s), 0 bad' in out
  config = tu.tiny_config(data)
  info = data_pipelines.dataset_info(config.dataset)
  with fs.open(f'{data}/label_map.txt') as f:
    assert info.label_names == f.read().split()
  assert info.num_classes == len(info.label_names) > 1
  train = data_pipelines.make_train_iterator(config.dataset, batch_size=4, seed=0,
                                             process_index=0, process_count=1)
  assert next(train)['inputs'].shape == (4, 8, 32, 32, 3)
  seen = sum(b['batch_mask'].sum() for b in data_pipelines.make_eval_iterator(
      config.dataset, 'eval', batch_size=4, process_index=0, process_count=1))
  assert seen == info.num_eval_examples > 0


def _publish(mirror):
  """Copies what orbax wrote to the mirror onto ram://, where gs:// would have it."""
  for directory, _, files in os.walk(mirror):
    target = 'ram://' + os.path.relpath(directory, mirror)
    fs.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(directory, name), f'{target}/{name}', overwrite=True)


@pytest.fixture(scope='module')
def runs(data, tmp_path_factory):
  """Stage 1 for 6 steps, resumed to 8, then stage 2 from it: every workdir on ram://."""
  mirror = str(tmp_path_factory.mktemp('orbax_mirror'))
  real = run_checkpoints.orbax_directory

  def redirected(path):
    path = os.fspath(path)
    return os.path.join(mirror, path[len('ram://'):]) if path.startswith('ram://') else real(path)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(run_checkpoints, 'orbax_directory', redirected)
    stage1 = trainer.train_and_evaluate(tu.tiny_config(data), f'{RUNS}/stage1')
    config = tu.tiny_config(data)
    config.num_training_steps = 8
    resumed = trainer.train_and_evaluate(config, f'{RUNS}/stage1')
    _publish(mirror)
    config = tu.tiny_config(data)
    config.stage, config.model.freeze_spatial = 'stage2', True
    config.model.adapter.type = 'attention'
    config.init_from.checkpoint_path = f'{RUNS}/stage1'  # format detected on ram://
    config.dataset.num_frames, config.num_training_steps = 16, 3
    stage2 = trainer.train_and_evaluate(config, f'{RUNS}/stage2')
    _publish(mirror)
    yield {'stage1': stage1, 'resumed': resumed, 'stage2': stage2}


def test_run_writes_its_reports_to_the_url_workdir(runs):
  workdir = f'{RUNS}/stage1'
  names = fs.listdir(workdir)
  assert {'config.json', 'history.jsonl', 'summary.json', 'training_curves.png'} <= set(names)
  assert any(n.startswith('events.out.tfevents') for n in names)  # TensorBoard
  assert configs.load_saved(workdir).num_training_steps == 8
  with fs.open(f'{workdir}/summary.json') as f:
    assert json.load(f)['step'] == 8
  with fs.open(f'{workdir}/training_curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  steps = [r['step'] for r in reporting.History(workdir).rows('train')]
  assert steps == list(range(1, 9))  # both runs appended to the one history
  # A URL taken for a local path (os.path.abspath) would have made ./ram:/...
  assert not os.path.exists(os.path.join(os.getcwd(), 'ram:'))


def test_run_resumes_and_stage2_starts_from_the_url_run(runs):
  assert 'from scratch' in runs['stage1']['start']
  assert runs['resumed']['start'].startswith('resumed from ')
  assert runs['resumed']['step'] == 8
  assert runs['stage2']['start'].startswith(
      f'Initialised from workdir checkpoint {RUNS}/stage1/checkpoints/8.')
  stage1, stage2 = tu.final_params(f'{RUNS}/stage1'), tu.final_params(f'{RUNS}/stage2')
  spatial = [k for k in stage1 if k.startswith('SpatialTransformer/')]
  assert spatial
  for k in spatial:  # frozen in stage 2
    np.testing.assert_array_equal(stage2[k], stage1[k], err_msg=k)


def test_predict_loads_a_url_run_and_its_label_map(runs, data):
  config, _, params, step = predict.load_run(f'{RUNS}/stage2')
  assert step == 3 and config.stage == 'stage2' and 'Adapter' in params
  with fs.open(f'{data}/label_map.txt') as f:
    expected = f.read().split()
  assert predict.label_names(config.dataset, len(expected)) == expected


def _write_url(path, data: bytes):
  with fs.open(path, 'wb') as f:
    f.write(data)
  return path


def test_init_from_scenic_and_image_vit_files_on_ram():
  source = load_cases._params()
  path = _write_url(f'{ROOT}/init/scenic/checkpoint_7',
                    flax.serialization.to_bytes({'params': source}))
  for given in (f'{ROOT}/init/scenic', path):  # the directory or the file
    params, message = load.load_init_params(
        load_cases._init_cfg(given), load_cases._params(seed=2),
        model_config=load_cases._model_config())
    load_cases._assert_subtree_equal(params, source, ['.*'])
    assert f'Initialised from scenic checkpoint {given}.' in message
  npz = io.BytesIO()
  load_cases._write_image_vit(npz)
  path = _write_url(f'{ROOT}/init/vit.npz', npz.getvalue())
  params, message = load.load_init_params(
      load_cases._init_cfg(path), load_cases._params('mlp'),
      model_config=load_cases._model_config('mlp'))
  load_cases._assert_subtree_equal(params, load_cases._params(seed=3),
                                   ['SpatialTransformer'])
  assert f'Initialised from vit_npz checkpoint {path}.' in message


def test_converter_reads_csv_and_videos_and_writes_shards_on_ram(tmp_path):
  for i in range(2):
    local = str(tmp_path / f'v{i}.mp4')
    video_cases._write_video(local, video_cases._source_frames(i))
    tf.io.gfile.copy(local, f'{ROOT}/videos/v{i}.mp4', overwrite=True)
  csv = _write_url(f'{ROOT}/videos/train.csv', b'v0.mp4,walk\nv1.mp4,run\n')
  report = convert_videos.convert(csv, f'{ROOT}/converted/train.tfrecord@2', num_workers=1,
                                  progress=False)
  assert report['written'] == 2 and report['skipped'] == 0
  assert fs.listdir(f'{ROOT}/converted') == [
      'label_map.txt', 'metadata.json', 'train.report.json',
      'train.tfrecord-00000-of-00002', 'train.tfrecord-00001-of-00002']
  assert validate.validate_tables([f'{ROOT}/converted/train.tfrecord@2']) == 0
