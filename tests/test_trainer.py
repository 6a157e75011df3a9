"""End-to-end tests of the trainer through the real CLI on a tiny model and tiny data."""

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from tests import trainer_utils as tu

SPATIAL = ('embedding/', 'cls_SpatialTransformer', 'SpatialTransformer/')


@pytest.fixture(scope='module')
def config_path(tmp_path_factory):
  data = tu.make_dataset(tmp_path_factory.mktemp('data'))
  return tu.write_config(tmp_path_factory.mktemp('config'), data)


@pytest.fixture(scope='module')
def stage1(config_path, tmp_path_factory):
  # Evaluations every 2 steps (for the history test) leave the training itself alone:
  # they read the parameters, never the state, the data stream or the RNG.
  workdir = str(tmp_path_factory.mktemp('stage1'))
  tu.run_main(config_path, workdir, '--config.log_eval_steps=2', '--config.run_test=True',
              '--config.class_report.at_eval=True')
  return workdir


def stage2_overrides(stage1_dir, *extra):
  return ('--config.stage=stage2', '--config.model.freeze_spatial=True',
          '--config.model.adapter.type=attention',
          f'--config.init_from.checkpoint_path={stage1_dir}',
          '--config.init_from.checkpoint_format=workdir',
          '--config.dataset.num_frames=16', '--config.num_training_steps=3', *extra)


def test_stage1_run_writes_summary_curves_and_checkpoints(stage1):
  with open(os.path.join(stage1, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['step'] == 6
  assert summary['params']['frozen'] == 0 and summary['params']['trainable'] > 0
  assert 0.0 <= summary['eval']['top1'] <= 1.0 and summary['eval']['count'] == 14
  assert summary['compiled_step_memory_bytes']['temp'] > 0
  assert 'from scratch' in summary['start']
  assert os.path.getsize(os.path.join(stage1, 'training_curves.png')) > 1000
  assert sorted(os.listdir(os.path.join(stage1, 'checkpoints'))) == ['3', '6']


def test_stage2_freezes_spatial_bit_for_bit_and_trains_the_rest(config_path, stage1, tmp_path):
  workdir = str(tmp_path / 'stage2')
  tu.run_main(config_path, workdir, *stage2_overrides(stage1))
  p1, p2 = tu.final_params(stage1), tu.final_params(workdir)
  spatial = [k for k in p1 if k.startswith(SPATIAL)]
  assert spatial
  for k in spatial:
    np.testing.assert_array_equal(p2[k], p1[k], err_msg=k)
  changed = lambda prefix: any(
      p1[k].shape == p2[k].shape and not np.array_equal(p1[k], p2[k])
      for k in p1 if k.startswith(prefix))
  assert changed('TemporalTransformer/') and changed('output_projection/')
  assert np.abs(p2['Adapter/up/kernel']).max() > 0  # zero-initialised, then trained
  assert p2['TemporalTransformer/posembed_input/pos_embedding'].shape == (1, 9, 32)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['params']['frozen'] > 0
  assert stage1 in summary['start']
  assert summary['frozen_modules'] == ['SpatialTransformer', 'cls_SpatialTransformer',
                                       'embedding'] or set(summary['frozen_modules']) == {
                                           'SpatialTransformer', 'cls_SpatialTransformer',
                                           'embedding'}


def test_shape_mismatched_init_from_fails_at_start_with_names(config_path, stage1, tmp_path):
  proc = tu.run_main(config_path, str(tmp_path / 'bad'),
                     *stage2_overrides(stage1, '--config.model.hidden_size=48'), check=False)
  assert proc.returncode == 3  # cli.CHECKPOINT_MISMATCH
  assert (f'vivit_adapter.main: error: The init checkpoint was trained with other model '
          f'sizes: model.hidden_size: 32 in {stage1}/config.json, 48 in this config.') in (
              proc.stderr)
  assert '32 in the checkpoint where the model has 48' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert os.listdir(tmp_path / 'bad') == []  # no config.json, no empty checkpoints/


# The interrupt lands once checkpoint 5 exists: 15 steps and 3 saves (seconds) before
# the run could end, against a 20 ms poll.
RESUME_STEPS = 20
RESUME = (f'--config.num_training_steps={RESUME_STEPS}', '--config.checkpoint_steps=5',
          '--config.log_summary_steps=5')


@pytest.fixture(scope='module')
def uninterrupted(config_path, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  tu.run_main(config_path, workdir, *RESUME)
  return workdir


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_and_resumed_run_is_bit_identical(config_path, uninterrupted, tmp_path, sig):
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(tu.main_command(config_path, workdir, *RESUME), cwd=tu.REPO,
                          env=tu.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  first = os.path.join(workdir, 'checkpoints', '5')
  deadline = time.time() + 300
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert proc.poll() is None, 'the run ended before it could be interrupted'
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  if sig == signal.SIGTERM:
    assert proc.returncode == 75, err[-3000:]  # cli.PREEMPTED: requeue
    assert 'SIGTERM received' in err
    assert err.strip().splitlines()[-1].startswith('vivit_adapter.main: stopped by SIGTERM '
                                                   'at step ')
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                 if s.isdigit())
  assert steps and steps[-1] < RESUME_STEPS, steps  # really interrupted mid-way
  tu.run_main(config_path, workdir, *RESUME)
  tu.assert_trees_equal(tu.final_params(workdir), tu.final_params(uninterrupted))


def _test_records(config_path):
  """(shard, record index) of every record of the test table."""
  from data_pipelines import reader  # pylint: disable=g-import-not-at-top
  files = reader.make_source(tu.tiny_config(_base_dir(config_path)).dataset, 'test').files
  return sorted((f, i) for f in files for i in range(reader.count_records([f])))


def _base_dir(config_path):
  with open(config_path) as f:
    return re.search(r"d.base_dir = '([^']+)'", f.read()).group(1)


@pytest.mark.parametrize('kind', ['test', 'eval'])
def test_class_report_covers_every_video_once_and_matches_the_summary(config_path, stage1,
                                                                      kind):
  with open(os.path.join(stage1, 'summary.json')) as f:
    summary = json.load(f)[kind]
  with open(os.path.join(stage1, f'{kind}_per_class.json')) as f:
    report = json.load(f)
  with open(os.path.join(stage1, f'{kind}_predictions.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == report['count'] == summary['count'] == 14
  if kind == 'test':  # each test video once, named by its shard and record
    assert sorted((l['shard'], l['record']) for l in lines) == _test_records(config_path)
  # The matrix and per-class numbers, recomputed here from the per-video lines.
  n = len(report['labels'])
  confusion = np.zeros((n, n), int)
  for l in lines:
    assert l['label_name'] == report['labels'][l['label']]
    scores = [t['score'] for t in l['top_k']]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    confusion[l['label'], l['top_k'][0]['index']] += 1
  assert report['confusion'] == confusion.tolist()
  support = confusion.sum(1)
  accuracy = [confusion[c, c] / support[c] for c in range(n) if support[c]]
  assert report['mean_class_accuracy'] == pytest.approx(np.mean(accuracy))
  assert summary['mean_class_accuracy'] == pytest.approx(np.mean(accuracy))
  assert summary['top1'] == pytest.approx(np.trace(confusion) / len(lines))
  assert [c['accuracy'] for c in report['per_class'] if c['support']] == pytest.approx(accuracy)
  assert report['step'] == 6


def test_confusion_png_and_tensorboard_carry_the_class_report(stage1):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open(os.path.join(stage1, 'confusion.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  (events,) = [n for n in os.listdir(stage1) if n.startswith('events.out')]
  tags = {v.tag for e in tf.compat.v1.train.summary_iterator(os.path.join(stage1, events))
          for v in e.summary.value}
  assert {'test/mean_class_accuracy', 'eval/mean_class_accuracy'} <= tags


def train_losses(workdir):
  with open(os.path.join(workdir, 'history.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [r['loss'] for r in rows if r['kind'] == 'train']


def test_history_times_each_evaluation_for_time_to_accuracy(stage1):
  with open(os.path.join(stage1, 'history.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  with open(os.path.join(stage1, 'summary.json')) as f:
    summary = json.load(f)
  times = [r['train_time_s'] for r in evals]
  assert [r['step'] for r in evals] == [2, 4, 6] and all(t > 0 for t in times)
  assert times == sorted(times)
  # The final evaluation carries the run's whole training time, wall and CPU.
  assert evals[-1]['step'] == summary['step']
  assert times[-1] == summary['train_time_s']
  cpu = [r['train_cpu_s'] for r in evals]
  assert all(c > 0 for c in cpu) and cpu == sorted(cpu)
  assert cpu[-1] == summary['train_cpu_s']


def test_four_devices_give_the_one_device_loss_trajectory(config_path, stage1, tmp_path):
  workdir = str(tmp_path / 'four')
  tu.run_main(config_path, workdir, devices=4)
  one, four = train_losses(stage1), train_losses(workdir)
  assert len(one) == len(four) == 6
  np.testing.assert_allclose(four, one, rtol=2e-4)
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['devices'] == 4


def test_nan_loss_stops_with_step_and_last_good_checkpoint(config_path, tmp_path):
  proc = tu.run_main(config_path, str(tmp_path / 'nan'),
                     '--config.lr_configs.base_learning_rate=1e38',
                     '--config.lr_configs.warmup_steps=0', '--config.checkpoint_steps=1',
                     check=False)
  assert proc.returncode == 4  # cli.DIVERGED
  assert 'Traceback' not in proc.stderr
  assert 'Training loss is nan at step 2' in proc.stderr or (
      'Training loss is inf at step 2' in proc.stderr), proc.stderr[-3000:]
  assert 'last good checkpoint is step 1' in proc.stderr
