"""Stage 2 from cached frozen features: extraction, the cache format and its manifest,
training and evaluation from the cache (real TFRecords, real orbax checkpoints)."""

import errno
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import data_pipelines
from data_pipelines import feature_cache
from tests import helpers
from tests import trainer_utils as tu
from vivit_adapter import config_loading
from vivit_adapter import extract_features
from vivit_adapter import models
from vivit_adapter.features import manifest as manifest_lib
from vivit_adapter.train_lib import data_source
from vivit_adapter.train_lib import trainer

SPLITS = ['train', 'eval', 'test']


def stage2_overrides(stage1_dir, *extra):
  return ('stage=stage2', 'model.freeze_spatial=True', 'model.adapter.type=attention',
          'model.adapter.hidden_size=16', f'init_from.checkpoint_path={stage1_dir}',
          'init_from.checkpoint_format=workdir', 'dataset.num_frames=16',
          'dataset.num_parallel_reads=1', *extra)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  """A tiny dataset, a 3-step stage-1 run and a float32 cache of its stage 2."""
  data = tu.make_dataset(tmp_path_factory.mktemp('data'))
  config_path = tu.write_config(tmp_path_factory.mktemp('config'), data)
  stage1 = str(tmp_path_factory.mktemp('stage1'))
  trainer.train_and_evaluate(
      config_loading.load_config(config_path, ['num_training_steps=3']), stage1)
  config = config_loading.load_config(config_path, stage2_overrides(stage1))
  cache = str(tmp_path_factory.mktemp('cache_f32'))
  stats = extract_features.run(config, cache, views=2, dtype='float32', splits=SPLITS,
                               videos_per_batch=4, command='test extraction')
  return {'data': data, 'config_path': config_path, 'stage1': stage1, 'config': config,
          'cache': cache, 'stats': stats}


def stage2_config(world, *extra):
  return config_loading.load_config(world['config_path'],
                                    stage2_overrides(world['stage1'], *extra))


def _params(world):
  config = world['config']
  model = models.create_model(config.model, 14, config.dataset.normalization)
  return model, extract_features.start_params(config, model)[0]


def test_manifest_records_what_made_the_cache(world):
  manifest = feature_cache.read_manifest(world['cache'])
  assert manifest['format_version'] == feature_cache.FORMAT_VERSION
  assert manifest['init_from']['checkpoint_path'] == world['stage1']
  assert manifest['kind'] == 'tokens' and manifest['dtype'] == 'float32'
  assert manifest['views'] == 2 and manifest['num_classes'] == 14
  assert manifest['model']['hidden_size'] == 32
  assert manifest['dataset']['num_frames'] == 16 and manifest['dataset']['stride'] == 2
  assert len(manifest['frozen_params_sha256']) == 64
  # 1 + (32/8)^2 tokens per temporal index (32 px crops), 8 indices, width 32.
  assert manifest['splits']['train'] == {'num_shards': 2, 'views_per_video': 2,
                                         'view_shape': [8, 17, 32]}
  assert manifest['splits']['test']['views_per_video'] == 2  # 2 clips x 1 crop
  assert {s: world['stats'][s]['written'] for s in SPLITS} == {
      'train': 56, 'eval': 14, 'test': 14}


def test_manifest_records_tower_switches_only_where_set():
  """A cache made before the image-tower switches existed still matches today's model;
  a run with a switch set (quick-GELU: same parameters, another frozen output) does not
  match a cache made without it."""
  config = helpers.tiny_config()
  plain = manifest_lib.expected(config, params_hash='h', kind='pooled')
  assert not set(plain['model']) & set(manifest_lib.TOWER_KEYS)
  config.model.spatial_transformer.mlp_activation = 'quick_gelu'
  tower = manifest_lib.expected(config, params_hash='h', kind='pooled')
  assert tower['model']['spatial_transformer.mlp_activation'] == 'quick_gelu'
  assert manifest_lib.differences(tower, plain) == [
      "model.spatial_transformer.mlp_activation: cache '<absent>', this run 'quick_gelu'"]


def test_cached_logits_equal_raw_logits(world):
  # The evaluation's own video pipeline and the whole model, against the cache read back
  # and the trainable part: same views, same parameters.
  config = world['config']
  model, params = _params(world)
  raw = data_pipelines.make_eval_iterator(config.dataset, split='eval', batch_size=8)
  manifest = feature_cache.read_manifest(world['cache'])
  cached = feature_cache.make_eval_iterator(world['cache'], manifest, 'eval', 8)
  for video, feats in zip(raw, cached):
    np.testing.assert_array_equal(video['label'], feats['label'])
    np.testing.assert_array_equal(video['batch_mask'], feats['batch_mask'])
    real = video['batch_mask'] > 0  # padding rows: a zero video vs zero features
    want = helpers.run(model, params, video['inputs'])
    got = helpers.run(model, params, feats['inputs'], part=models.TRAINABLE_PART)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=0,
                               atol=1e-5)


def test_bfloat16_cache_logits_within_documented_tolerance(world, tmp_path):
  config = world['config']
  model, params = _params(world)
  extract_features.run(config, str(tmp_path), views=1, dtype='bfloat16', splits=['eval'],
                       videos_per_batch=8, command='bf16')
  manifest = feature_cache.read_manifest(str(tmp_path))
  cached = next(feature_cache.make_eval_iterator(str(tmp_path), manifest, 'eval', 8))
  assert cached['inputs'].dtype.name == 'bfloat16'
  video = next(data_pipelines.make_eval_iterator(config.dataset, split='eval', batch_size=8))
  want = np.asarray(helpers.run(model, params, video['inputs']))
  got = np.asarray(helpers.run(model, params, cached['inputs'].astype(np.float32),
                               part=models.TRAINABLE_PART))
  # bfloat16 keeps 8 bits of mantissa (relative rounding <= 2^-9 per feature); the
  # docs/feature_cache.md documents |logit error| <= 0.02 * (1 + |logit|) for cached bf16 features.
  assert np.all(np.abs(got - want) <= 0.02 * (1 + np.abs(want)))
  assert np.abs(got - want).max() > 0  # really rounded: the tolerance is not vacuous


def test_cache_of_another_checkpoint_or_config_is_refused(world):
  config = stage2_config(world, f'feature_cache.dir={world["cache"]}')
  source = data_source.CachedSource(config)
  model, params = _params(world)
  frozen = ('embedding', 'cls_SpatialTransformer', 'SpatialTransformer')
  source.check_params(params, frozen)  # the matching run passes
  other = jax.tree.map(lambda x: x + 1e-3, params)
  with pytest.raises(feature_cache.CacheError,
                     match=r'does not match this run \(frozen_params_sha256: cache .*'
                           r'extract_features --config=experiments/tiny.py'):
    source.check_params(other, frozen)
  strided = data_source.CachedSource(stage2_config(
      world, f'feature_cache.dir={world["cache"]}', 'dataset.stride=1'))
  with pytest.raises(feature_cache.CacheError, match=r'dataset.stride: cache 2, this run 1'):
    strided.check_params(params, frozen)


def test_attention_adapter_refuses_a_pooled_cache(world, tmp_path):
  pooled = stage2_config(world, 'model.adapter.type=mlp')
  extract_features.run(pooled, str(tmp_path), views=1, dtype='float32', splits=['train'],
                       videos_per_batch=8, command='pooled')
  assert feature_cache.read_manifest(str(tmp_path))['kind'] == 'pooled'
  config = stage2_config(world, f'feature_cache.dir={tmp_path}')
  model, params = _params(world)
  with pytest.raises(feature_cache.CacheError, match=r"adapter 'attention' needs 'tokens'"):
    data_source.CachedSource(config).check_params(
        params, ('embedding', 'cls_SpatialTransformer', 'SpatialTransformer'))


def test_missing_or_partial_cache_names_the_shards_and_the_command(world, tmp_path):
  with pytest.raises(feature_cache.CacheError, match='is not a feature cache.*extract_features'):
    data_source.CachedSource(stage2_config(world, f'feature_cache.dir={tmp_path}'))
  partial = str(tmp_path / 'partial')
  shutil.copytree(world['cache'], partial)
  os.remove(os.path.join(partial, feature_cache.shard_name('train', 1, 2)))
  with pytest.raises(feature_cache.CacheError,
                     match=r'1 of 2 train shards are missing \(train-00001-of-00002.tfrecord\)'
                           r'.*Finish it with: test extraction'):
    data_source.CachedSource(stage2_config(world, f'feature_cache.dir={partial}'))


def test_full_disk_leaves_no_half_written_shard(world, tmp_path, monkeypatch):
  real = feature_cache.make_example
  calls = []

  def fail_on_third(*args):
    calls.append(1)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real(*args)

  monkeypatch.setattr(feature_cache, 'make_example', fail_on_third)
  with pytest.raises(OSError, match='No space left'):
    extract_features.run(world['config'], str(tmp_path), views=1, dtype='float32',
                         splits=['train'], videos_per_batch=8, command='full disk')
  left = sorted(os.listdir(tmp_path))
  assert left == [feature_cache.MANIFEST_FILE], left  # no shard, no temporary file


def test_not_enough_disk_stops_before_writing(world, tmp_path, monkeypatch):
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(10, 10, 10))
  with pytest.raises(OSError, match=r'the cache needs 0.00\d GiB but only 0.000 GiB are free'):
    extract_features.run(world['config'], str(tmp_path), views=1, dtype='float32',
                         splits=['train'], videos_per_batch=8, command='no disk')
  assert not os.listdir(tmp_path)


def _records(cache_dir):
  out = {}
  for path in sorted(glob.glob(os.path.join(cache_dir, '*.tfrecord'))):
    with open(path, 'rb') as f:
      out[os.path.basename(path)] = f.read()
  return out


def test_killed_extraction_restarts_to_the_same_shards(world, tmp_path):
  # A real SIGKILL in the middle of the CLI's run, a leftover temporary file, then the
  # same command again: the shards equal an uninterrupted extraction's, byte for byte.
  cache = str(tmp_path / 'cache')
  command = [sys.executable, '-m', 'vivit_adapter.extract_features',
             f'--config={world["config_path"]}', f'--cache_dir={cache}', '--views=2',
             '--dtype=float32', '--videos_per_batch=4',
             *[f'--config.{o}' for o in stage2_overrides(world['stage1'])]]
  proc = subprocess.Popen(command, cwd=tu.REPO, env=tu.env(4), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not glob.glob(os.path.join(cache, 'train-*.tfrecord')) and time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f'extraction ended early ({proc.returncode}): {proc.stderr.read()}')
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = set(_records(cache))
  assert done and len(done) < 6, done  # killed part-way
  rerun = subprocess.run(command, cwd=tu.REPO, env=tu.env(4), capture_output=True, text=True,
                         timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'shards already done' in rerun.stdout
  assert not [f for f in os.listdir(cache) if '.tmp' in f]
  assert _records(cache) == _records(world['cache'])


def test_train_stream_resumes_and_draws_views_per_epoch(world):
  manifest = feature_cache.read_manifest(world['cache'])
  it = feature_cache.make_train_iterator(world['cache'], manifest, batch_size=4, seed=3)
  first = [next(it) for _ in range(3)]
  resumed = feature_cache.make_train_iterator(world['cache'], manifest, batch_size=4, seed=3,
                                              state=it.state)
  straight = [next(it) for _ in range(4)]
  again = [next(resumed) for _ in range(4)]
  for a, b in zip(straight, again):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # One epoch = every one of the 56 videos once (14 batches of 4), each as one of its 2
  # stored views; over epochs both views of a video appear.
  it = feature_cache.make_train_iterator(world['cache'], manifest, batch_size=4, seed=3)
  epochs = [np.concatenate([next(it)['inputs'] for _ in range(14)]) for _ in range(3)]
  assert all(e.shape == (56, 8, 17, 32) for e in epochs) and first[0]['inputs'].shape[0] == 4
  distinct = {e.round(5).tobytes() for epoch in epochs for e in epoch}
  assert 56 < len(distinct) <= 112


def test_short_stage2_from_cache_lowers_loss_and_predicts_on_video(world, tmp_path):
  from tests.test_predict import _write_mp4  # pylint: disable=g-import-not-at-top
  from vivit_adapter import predict  # pylint: disable=g-import-not-at-top
  config = stage2_config(world, f'feature_cache.dir={world["cache"]}',
                         'num_training_steps=12', 'lr_configs.base_learning_rate=0.01',
                         'run_test=True')
  workdir = str(tmp_path / 'stage2')
  summary = trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'history.jsonl')) as f:
    losses = [r['loss'] for r in map(json.loads, f) if r['kind'] == 'train']
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  # The checkpoint is the whole model: the final test ran it on the raw test videos,
  # and it agrees with the test from the cached test views (float32 cache).
  assert summary['feature_cache'] == world['cache']
  assert summary['test']['count'] == summary['test_cached']['count'] == 14
  assert summary['test']['top1'] == summary['test_cached']['top1']
  video = str(tmp_path / 'clip.mp4')
  _write_mp4(video, num_frames=40)
  result = predict.predict(workdir, video, k=3)
  assert len(result.top) == 3 and abs(sum(p.probability for p in result.top)) <= 1.0


def test_data_benchmark_reads_the_cache_beside_the_videos(world):
  proc = subprocess.run(
      [sys.executable, '-m', 'vivit_adapter.benchmark_data',
       f'--config={world["config_path"]}', '--num_batches=3', '--warmup_batches=1',
       '--batch_size=4',
       *[f'--config.{o}' for o in stage2_overrides(world['stage1'])],
       f'--config.feature_cache.dir={world["cache"]}'],
      cwd=tu.REPO, env=tu.env(1), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r'train input pipeline: [\d.]+ clips/s', proc.stdout)
  assert re.search(rf'feature cache {re.escape(world["cache"])}: [\d.]+ clips/s '
                   r'\([\d.]+x the videos; 3 batches of 4 stored views\)', proc.stdout)


def test_cache_below_the_dial_gives_the_logits_of_stage2_from_video(world, tmp_path):
  # trainable_spatial_layers = 1 of the tiny model's 1 spatial layer: the cache holds
  # every token after the position embedding (T' x (1+N) x D, even for the mlp
  # adapter), and the trainable part runs the spatial layer, norm, adapter, temporal
  # encoder and head on it: the logits of the same model on the video.
  dial = ('model.trainable_spatial_layers=1', 'model.adapter.type=mlp')
  config = stage2_config(world, *dial)
  extract_features.run(config, str(tmp_path), views=1, dtype='float32',
                       splits=['train', 'eval'], videos_per_batch=8, command='dial')
  manifest = feature_cache.read_manifest(str(tmp_path))
  assert manifest['model']['trainable_spatial_layers'] == 1 and manifest['kind'] == 'tokens'
  assert manifest['splits']['eval']['view_shape'] == [8, 17, 32]
  model = models.create_model(config.model, 14, config.dataset.normalization)
  params = extract_features.start_params(config, model)[0]
  video = next(data_pipelines.make_eval_iterator(config.dataset, split='eval', batch_size=8))
  cached = next(feature_cache.make_eval_iterator(str(tmp_path), manifest, 'eval', 8))
  np.testing.assert_allclose(
      np.asarray(helpers.run(model, params, cached['inputs'], part=models.TRAINABLE_PART)),
      np.asarray(helpers.run(model, params, video['inputs'])), rtol=0, atol=1e-5)
  # The run at the same dial accepts it and trains from it (the split frozen set).
  summary = trainer.train_and_evaluate(
      stage2_config(world, *dial, f'feature_cache.dir={tmp_path}', 'num_training_steps=2',
                    'run_test=False'), str(tmp_path / 'run'))
  assert summary['step'] == 2
  assert 'SpatialTransformer/posembed_input' in summary['frozen_modules']
  # Resumed in the same workdir (the optimizer state of the split spatial encoder
  # restored), then `predict` runs the whole model of the checkpoint on a video file.
  from tests.test_predict import _write_mp4  # pylint: disable=g-import-not-at-top
  from vivit_adapter import predict  # pylint: disable=g-import-not-at-top
  summary = trainer.train_and_evaluate(
      stage2_config(world, *dial, f'feature_cache.dir={tmp_path}', 'num_training_steps=3',
                    'run_test=False'), str(tmp_path / 'run'), allow_config_change=True)
  assert summary['step'] == 3 and summary['start'].startswith('resumed from ')
  video_file = str(tmp_path / 'clip.mp4')
  _write_mp4(video_file, num_frames=40)
  result = predict.predict(str(tmp_path / 'run'), video_file, k=3)
  assert len(result.top) == 3
  # A run at another layer refuses it, in one line naming the layer.
  for k, adapter in ((0, 'attention'), (0, 'mlp')):
    other = stage2_config(world, f'model.trainable_spatial_layers={k}',
                          f'model.adapter.type={adapter}', f'feature_cache.dir={tmp_path}')
    frozen = ('embedding', 'cls_SpatialTransformer', 'SpatialTransformer')
    with pytest.raises(feature_cache.CacheError,
                       match=r'^Feature cache .* does not match this run \([^\n]*'
                             r'model.trainable_spatial_layers: cache 1, this run 0[^\n]*'
                             r'Make one for this run: python -m vivit_adapter.extract_features'
                             r'[^\n]*$'):
      data_source.CachedSource(other).check_params(params, frozen)
