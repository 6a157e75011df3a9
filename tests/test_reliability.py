"""The rows of docs/reliability.md that no module's own test file proves: each bad input
or fault as the user meets it (the program's exit code and its one line), kept fast."""

import os
import re
import subprocess

import av
import numpy as np
import pytest

from data_pipelines import cli
from data_pipelines import convert_videos
from data_pipelines import dmvr_format
from data_pipelines import make_train_iterator
from tests import trainer_utils as tu
from vivit_adapter import configs
from vivit_adapter.train_lib import workdir_guard

PROGRAM = 'vivit_adapter.main: error: '


def _run_main(config_path, workdir, *overrides):
  return subprocess.run(tu.main_command(config_path, workdir, *overrides), cwd=tu.REPO,
                        env=tu.env(), capture_output=True, text=True, timeout=120,
                        check=False)


def _finished_workdir(tmp_path, base_dir):
  """What a finished tiny run leaves for the guard: config.json and a step directory."""
  workdir = tmp_path / 'run'
  os.makedirs(workdir / 'checkpoints' / '6')
  configs.save(tu.tiny_config(base_dir), str(workdir))
  return workdir


def test_main_refuses_a_rerun_with_another_model_in_one_line(tmp_path):
  config_path = tu.write_config(tmp_path, str(tmp_path / 'data'))
  workdir = _finished_workdir(tmp_path, str(tmp_path / 'data'))
  before = (workdir / configs.CONFIG_FILE).read_bytes()
  proc = _run_main(config_path, workdir, '--config.model.hidden_size=64')
  assert proc.returncode == cli.USAGE_ERROR, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      f'{PROGRAM}--workdir={workdir} holds checkpoints of another model; this config '
      'changes what they were trained with: model.hidden_size: 32 in config.json, 64 now. '
      'Use a new --workdir for this config; the checkpoints there are untouched.']
  assert (workdir / configs.CONFIG_FILE).read_bytes() == before
  assert sorted(os.listdir(workdir)) == ['checkpoints', configs.CONFIG_FILE]


def test_main_probes_an_unwritable_workdir_at_start_and_exits_74(tmp_path):
  # Data present (start-up only looks for the training shards), so that the first
  # thing to fail is the write probe. /sys refuses new entries even to root.
  with dmvr_format.ShardedWriter(str(tmp_path / 'data' / 'train.tfrecord'), 1) as writer:
    writer.write(b'x')
  config_path = tu.write_config(tmp_path, str(tmp_path / 'data'))
  workdir = '/sys/vivit_adapter_reliability_run'
  proc = _run_main(config_path, workdir)
  assert proc.returncode == cli.IO_ERROR, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f'{PROGRAM}{workdir}: cannot write to --workdir ('), last
  assert last.endswith('; choose a path this user can write to'), last
  assert 'Traceback' not in proc.stderr


def test_a_damaged_config_json_is_a_one_line_error(tmp_path):
  workdir = _finished_workdir(tmp_path, str(tmp_path / 'data'))
  (workdir / configs.CONFIG_FILE).write_text('{"model": {"hidden_size": 3')  # cut short
  with pytest.raises(cli.ConfigError) as e:
    workdir_guard.check_workdir(tu.tiny_config(str(tmp_path / 'data')), str(workdir))
  assert re.fullmatch(rf'{workdir}/config\.json is not valid JSON \(.*\); restore it from '
                      r'a copy, or use a new --workdir\.', str(e.value)), str(e.value)


def _tiny_table(prefix, num_videos, num_shards):
  """`num_videos` 4-frame 8x8 clips, labelled by index, dealt round robin into shards."""
  frames = np.full((4, 8, 8, 3), 128, np.uint8)
  with dmvr_format.ShardedWriter(prefix, num_shards) as writer:
    for label in range(num_videos):
      writer.write(dmvr_format.make_sequence_example(
          dmvr_format.encode_jpeg_frames(frames), label).SerializeToString())


def test_a_cut_training_shard_counts_towards_max_bad_fraction(tmp_path):
  # 0 is strict: the cut tail of shard 1 stops training, naming the file and the byte.
  _tiny_table(str(tmp_path / 'train.tfrecord'), 24, 2)
  cut = tmp_path / 'train.tfrecord-00001-of-00002'
  cut.write_bytes(cut.read_bytes()[:-100])
  cfg = configs.base_config().dataset
  cfg.update(dict(base_dir=str(tmp_path), num_classes=24, num_frames=4, stride=1,
                  min_resize=8, crop_size=8, shuffle_buffer=4, max_bad_fraction=0.0))
  it = make_train_iterator(cfg, batch_size=4, seed=0, process_index=0, process_count=1)
  with pytest.raises(cli.DataError) as e:
    for _ in range(12):
      next(it)
  message = str(e.value)
  assert '\n' not in message
  assert re.match(r'1 bad records already in epoch 0 of training on this host, more than '
                  r'config\.dataset\.max_bad_fraction=0\.0 of its 24 records allow', message)
  assert re.search(rf'{cut} record 11: the file is cut short or damaged at byte \d+ of \d+: '
                   '11 whole records were read before it', message), message


def test_resuming_on_another_number_of_processes_is_a_config_error(tmp_path):
  # A run saved on one host, resumed on two: process 1 is handed process 0's data state.
  _tiny_table(str(tmp_path / 'train.tfrecord'), 8, 2)
  cfg = configs.base_config().dataset
  cfg.update(dict(base_dir=str(tmp_path), num_classes=8, num_frames=4, stride=1,
                  min_resize=8, crop_size=8))
  state = make_train_iterator(cfg, 2, seed=0, process_index=0, process_count=1).state
  with pytest.raises(cli.ConfigError) as e:
    make_train_iterator(cfg, 2, seed=0, state=state, process_index=1, process_count=2)
  assert cli.exit_code(e.value) == cli.USAGE_ERROR
  assert str(e.value) == (
      'Input pipeline state was saved with process_index=0 but this run has '
      'process_index=1; the stream cannot be resumed. Resume with the seed and number of '
      'processes the checkpoint was saved with, or use a new --workdir.')


def test_too_little_disk_for_a_feature_cache_exits_74(tmp_path, monkeypatch):
  import shutil  # pylint: disable=g-import-not-at-top
  from vivit_adapter.features import extraction  # pylint: disable=g-import-not-at-top
  full = shutil._ntuple_diskusage(10, 10, 10)  # pylint: disable=protected-access
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: full)
  plan = extraction.Plan('train', ['a'], [0], views=4, num_videos=1000)
  with pytest.raises(OSError) as e:
    extraction.check_disk(str(tmp_path), [plan], (8, 16, 32), 'bfloat16')
  assert cli.exit_code(e.value) == cli.IO_ERROR
  assert re.fullmatch(
      rf'{tmp_path}: the cache needs 0\.\d+ GiB but only 0\.000 GiB are free \(fewer '
      r'--views or a pooled adapter need less\); free some space or write elsewhere .*',
      cli.message(e.value)), cli.message(e.value)


def _write_frameless_video(path):
  """An AVI with a video stream and no frame (an MP4 without frames has no stream)."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    container.start_encoding()


def test_a_zero_frame_video_is_skipped_by_the_converter_and_refused_by_predict(tmp_path):
  from vivit_adapter import predict  # pylint: disable=g-import-not-at-top
  video = str(tmp_path / 'empty.avi')
  _write_frameless_video(video)
  csv_path = tmp_path / 'list.csv'
  csv_path.write_text(f'{video},0\n')
  report = convert_videos.convert(str(csv_path), f'{tmp_path}/o/train.tfrecord@1',
                                  num_workers=1, progress=False)
  assert (report['written'], report['skipped']) == (0, 1)
  assert report['skipped_files'][0]['reason'] == 'ValueError: no frames decoded'
  with pytest.raises(cli.DataError, match=re.escape(
      '1 of 1 videos were skipped (100.0% > --max_skipped_fraction=0.05)')):
    convert_videos.check_skipped(report, 0.05)
  with pytest.raises(ValueError, match=re.escape(
      f'--video={video!r} could not be decoded as a video: ValueError: no frames decoded')):
    predict.read_video(video)


def test_the_doc_has_the_exit_codes_and_cites_tests_that_exist():
  with open(os.path.join(tu.REPO, 'docs', 'reliability.md')) as f:
    doc = f.read()
  with open(os.path.join(tu.REPO, 'README.md')) as f:
    assert '(docs/reliability.md)' in f.read()
  assert cli.code_table() in doc
  cited = re.findall(r'(tests/\w+\.py)::(\w+)', doc)
  assert len({row for row in re.findall(r'^\| (\d+) \|', doc, re.M)}) >= 25
  for path, name in cited:
    with open(os.path.join(tu.REPO, path)) as f:
      assert re.search(rf'^def {name}\(', f.read(), re.M), f'{path}::{name}'


# ----------------------------------------------------------------------------------------
# Finite or refused (issue 26): nothing non-finite is saved, scored or predicted.
# ----------------------------------------------------------------------------------------

def _nan_tree(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.full(np.shape(x), np.nan, np.float32), tree)


def test_nonfinite_scores_never_count_as_correct_and_end_the_evaluation():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  from vivit_adapter.models import create_model  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import evaluation, losses, steps  # pylint: disable=g-import-not-at-top
  scores = jnp.array([[np.nan, 0., 0.], [0., np.inf, 0.], [0., 1., 0.]])
  labels, ones = jnp.array([0, 1, 1]), jnp.ones(3)
  assert float(losses.topk_correct(scores, labels, 1, ones)) == 1.0  # only the finite row
  assert float(losses.nonfinite_count(scores, ones)) == 2.0
  c = helpers.tiny_config()
  model = create_model(c.model, 5, '')
  video = helpers.random_video((4, 8, 16, 16, 3))
  params = _nan_tree(helpers.init(model, video))
  batch = {'inputs': video, 'label': jnp.arange(4), 'batch_mask': jnp.array([1., 1., 1., 0.])}
  out = jax.jit(steps.make_eval_step(model, 5))(params, batch)
  assert (float(out['top1']), float(out['top5']), float(out['nonfinite'])) == (0., 0., 3.)
  views = dict(batch, inputs=jnp.stack([video, video], axis=1))
  out = jax.jit(steps.make_test_step(model))(params, views)
  assert (float(out['top1']), float(out['top5']), float(out['nonfinite'])) == (0., 0., 3.)
  with pytest.raises(cli.DivergedError) as e:
    evaluation._refuse_nonfinite(3., 3., 'test')  # pylint: disable=protected-access
  assert cli.exit_code(e.value) == cli.DIVERGED
  assert str(e.value) == (
      'The model gives NaN or infinite logits on 3 of 3 test examples: its parameters '
      'diverged, so there is no test score. Lower config.lr_configs.base_learning_rate '
      'or check the input data.')


def _ckpt_state(value, step):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  return helpers.TrainState(params={'head': {'kernel': jnp.full((2, 3), value)}},
                            opt_state={'mu': jnp.zeros((2, 3))}, step=jnp.asarray(step),
                            rng=jax.random.PRNGKey(0))


def test_a_nonfinite_state_is_never_saved_and_the_last_good_checkpoint_is_finite(tmp_path):
  from vivit_adapter.train_lib import checkpointing  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import trainer  # pylint: disable=g-import-not-at-top
  manager = checkpointing.make_manager(str(tmp_path), max_to_keep=5)
  checkpointing.save(manager, _ckpt_state(1., 1), {})
  nan = _ckpt_state(np.nan, 2)
  with pytest.raises(cli.DivergedError) as e:
    trainer._check_state_finite(nan, 2, manager)  # pylint: disable=protected-access
  assert str(e.value) == (
      'The training state after step 2 is not finite (1 tensor holds NaN or inf, e.g. '
      'params/head/kernel); it was not saved; stopping. The last good checkpoint is step '
      f'1 in {tmp_path}/checkpoints. Lower config.lr_configs.base_learning_rate or check '
      'the input data.')
  assert manager.all_steps() == [1]
  # A non-finite checkpoint written before saves were checked is skipped on resume.
  checkpointing.save(manager, nan, {})
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [1, 2]
  state, _, step = checkpointing.restore_latest(manager, _ckpt_state(0., 0))
  assert step == 1 and float(state.params['head']['kernel'][0, 0]) == 1.
  manager.close()


def test_predict_refuses_a_nonfinite_model_in_one_line():
  from vivit_adapter import predict  # pylint: disable=g-import-not-at-top
  params = {'output_projection': {'kernel': np.ones((2, 3), np.float32),
                                  'bias': np.array([0., np.inf, 0.], np.float32)}}
  predict.check_finite({'output_projection': {'kernel': np.ones((2, 3), np.float32)}},
                       'W', 3)
  with pytest.raises(cli.DivergedError) as e:
    predict.check_finite(params, 'W', 3)
  assert str(e.value) == (
      'The checkpoint of step 3 in W is not finite (1 tensor holds NaN or inf, e.g. '
      'output_projection/bias): its training diverged. Use an earlier --step, or retrain '
      'with a lower config.lr_configs.base_learning_rate.')


def test_main_exits_4_when_the_eval_logits_are_nan_instead_of_scoring_them(tmp_path):
  # lr 1e39 is inf in float32: the state is NaN after step 1 while its loss was finite;
  # the evaluation after step 1 scored NaN logits 100% top-1 before.
  config_path = tu.write_config(tmp_path, tu.make_dataset(tmp_path / 'data'))
  proc = _run_main(config_path, tmp_path / 'run', '--config.num_training_steps=2',
                   '--config.log_eval_steps=1', '--config.lr_configs.base_learning_rate=1e39',
                   '--config.lr_configs.warmup_steps=0')
  assert proc.returncode == cli.DIVERGED, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f'{PROGRAM}The model gives NaN or infinite logits on 14 of 14 eval examples: its '
      'parameters diverged, so there is no eval score. Lower '
      'config.lr_configs.base_learning_rate or check the input data.')
  assert not (tmp_path / 'run' / 'checkpoints').exists()


# ----------------------------------------------------------------------------------------
# The loader always yields a batch or stops; a signal ends any wait on it (issue 26).
# ----------------------------------------------------------------------------------------

def _unlabelled_table(prefix, num_videos, num_shards):
  frames = dmvr_format.encode_jpeg_frames(np.full((4, 8, 8, 3), 128, np.uint8))
  with dmvr_format.ShardedWriter(prefix, num_shards) as writer:
    for _ in range(num_videos):
      writer.write(dmvr_format.make_sequence_example(frames, None).SerializeToString())


def test_a_table_of_only_bad_records_stops_even_with_max_bad_fraction_1(tmp_path):
  # Every record lacks its label; 1.0 allows them all, so the stream used to drop every
  # record forever (100% CPU, no batch, no error).
  from data_pipelines import make_eval_iterator  # pylint: disable=g-import-not-at-top
  _unlabelled_table(str(tmp_path / 'train.tfrecord'), 6, 2)
  _unlabelled_table(str(tmp_path / 'eval.tfrecord'), 3, 1)
  cfg = configs.base_config().dataset
  cfg.update(dict(base_dir=str(tmp_path), num_classes=3, num_frames=4, stride=1,
                  min_resize=8, crop_size=8, shuffle_buffer=4, max_bad_fraction=1.0,
                  eval_table='eval.tfrecord@*'))
  it = make_train_iterator(cfg, batch_size=2, seed=0, process_index=0, process_count=1)
  with pytest.raises(cli.DataError) as e:
    next(it)
  assert cli.exit_code(e.value) == cli.DATA_ERROR
  assert re.fullmatch(
      rf'6 bad records in a row and not one good record \(this host reads 6 records per '
      rf'epoch, from {tmp_path}/train\.tfrecord-00000-of-00002, {tmp_path}/train\.tfrecord-'
      r'00001-of-00002\): the stream cannot yield a batch\. First: \S+ record \d: missing '
      r'label \(clip/label/index\)\. List them all with `python -m data_pipelines\.validate --tables=\S+'
      r'train\.tfrecord@\*`, then fix or remove them\.', str(e.value)), str(e.value)
  with pytest.raises(cli.DataError, match=r'^3 bad records in a row and not one good record '
                     rf'\(this host reads 3 records per epoch, from {tmp_path}/eval\.'):
    list(make_eval_iterator(cfg, 'eval', 2, process_index=0, process_count=1))


_BLOCKED_PIPELINE = '''
import os, signal, sys, threading, time
from data_pipelines import cli
cli.start()
from data_pipelines import tf_runtime
from data_pipelines import train_stream
from vivit_adapter.train_lib import checkpointing
tf = tf_runtime.import_tensorflow()

def main():
  it = train_stream.ClosableIterator()
  it._open(tf.data.Dataset.range(2**62).filter(lambda x: x < 0))  # spins in C++
  watcher = checkpointing.PreemptionWatcher() if sys.argv[1] == 'watcher' else None
  if watcher:
    watcher.__enter__()
  print('waiting', time.time(), flush=True)
  threading.Timer(1.0, os.kill, [os.getpid(), signal.SIGTERM]).start()
  it._next_batch()

sys.exit(cli.run(main, program='blocked'))
'''


@pytest.mark.parametrize('handler', ['watcher', 'program'])
def test_sigterm_ends_a_blocked_input_pipeline_with_75_within_seconds(tmp_path, handler):
  import time  # pylint: disable=g-import-not-at-top
  script = tmp_path / 'blocked.py'
  script.write_text(_BLOCKED_PIPELINE)
  proc = subprocess.run([tu.sys.executable, str(script), handler], cwd=tu.REPO,
                        env=tu.env(), capture_output=True, text=True, timeout=120,
                        check=False)
  ended = time.time()
  assert proc.returncode == cli.PREEMPTED, proc.stderr[-2000:]
  waiting = float(proc.stdout.split()[1])
  assert ended - waiting < 8, ended - waiting  # 1 s to the signal, then seconds
  # The training loop's watcher only sets a flag, the wait sees it; a program's own
  # handler raises its Preempted in the wait.
  where = ' while waiting for training data' if handler == 'watcher' else (
      '; nothing was left half-written')
  assert proc.stderr.strip().splitlines()[-1] == (
      f'blocked: stopped by SIGTERM{where}; rerun the same command to continue (a run '
      'resumes from its last checkpoint).')


# ----------------------------------------------------------------------------------------
# One run per workdir (issue 26).
# ----------------------------------------------------------------------------------------

_HOLD_LOCK = '''
import os, sys, time
from vivit_adapter.train_lib import run_lock
run_lock.acquire(sys.argv[1])
print('locked', flush=True)
time.sleep(600)
'''


def test_a_second_run_on_a_workdir_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import run_lock  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (tmp_path / 'hold.py').write_text(_HOLD_LOCK)
  holder = subprocess.Popen([tu.sys.executable, str(tmp_path / 'hold.py'), str(workdir)],
                            cwd=tu.REPO, env=tu.env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    info = json.loads((workdir / run_lock.LOCK_FILE).read_text())
    assert (info['pid'], info['host']) == (holder.pid, socket.gethostname())
    with pytest.raises(cli.ConfigError) as e:
      run_lock.acquire(str(workdir))
    assert str(e.value) == (
        f'--workdir={workdir} is in use by another run (pid {holder.pid} on host '
        f'{info["host"]}, started {info["started"]}; {workdir}/.run.lock). Wait for it to '
        'end or stop it, or use another --workdir: two runs on one workdir overwrite each '
        "other's checkpoints.")
    run_lock.acquire(str(workdir), process_index=1)  # the other processes of a run: no lock
  finally:
    holder.send_signal(signal.SIGKILL)  # the lock dies with it; its file stays behind
    holder.wait()
  assert (workdir / run_lock.LOCK_FILE).exists()
  run_lock.acquire(str(workdir))
  try:
    assert json.loads((workdir / run_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  finally:
    run_lock.release(str(workdir))
  assert os.listdir(workdir) == []


def test_main_refuses_a_second_run_on_a_locked_workdir_in_one_line(tmp_path):
  from vivit_adapter.train_lib import run_lock  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  _tiny_table(str(data / 'train.tfrecord'), 8, 1)
  config_path = tu.write_config(tmp_path, str(data))
  workdir = tmp_path / 'run'
  workdir.mkdir()
  run_lock.acquire(str(workdir))
  try:
    proc = _run_main(config_path, workdir, '--config.dataset.num_classes=8')
  finally:
    run_lock.release(str(workdir))
  assert proc.returncode == cli.USAGE_ERROR, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()
  assert len([l for l in last if l.startswith(PROGRAM)]) == 1 and 'Traceback' not in proc.stderr
  assert last[-1].startswith(f'{PROGRAM}--workdir={workdir} is in use by another run (pid '
                             f'{os.getpid()} on host '), last[-1]


def test_a_url_workdir_lock_is_taken_over_only_from_a_dead_process_of_this_host():
  import json  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  from data_pipelines import fs  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import run_lock  # pylint: disable=g-import-not-at-top
  workdir = 'ram://reliability/locked_run'
  fs.makedirs(workdir)
  path = f'{workdir}/{run_lock.LOCK_FILE}'
  live = {'host': socket.gethostname(), 'pid': os.getppid(), 'started': 'then'}
  fs.atomic_write(path, json.dumps(live))
  with pytest.raises(cli.ConfigError, match=re.escape(
      f'--workdir={workdir} is in use by another run (pid {os.getppid()} on host ')):
    run_lock.acquire(workdir)
  fs.atomic_write(path, json.dumps(dict(live, pid=2**22 + 17)))  # above pid_max: no process
  run_lock.acquire(workdir)
  with fs.open(path) as f:
    assert json.load(f)['pid'] == os.getpid()
  run_lock.release(workdir)
  assert not fs.exists(path)


# ----------------------------------------------------------------------------------------
# Data truth from the files, checked at start-up (issue 26).
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
  """8 train clips in 2 shards, 3 eval clips, and a config whose batch fits."""
  d = tmp_path_factory.mktemp('small_data')
  _tiny_table(str(d / 'train.tfrecord'), 8, 2)
  _tiny_table(str(d / 'validation.tfrecord'), 3, 1)
  return d


def _data_config(base_dir, **dataset):
  config = tu.tiny_config(str(base_dir))
  config.dataset.update(dict(num_classes=8, **dataset))
  config.batch_size = 4
  return config


def _preflight_error(config) -> str:
  from vivit_adapter.train_lib import startup  # pylint: disable=g-import-not-at-top
  with pytest.raises(cli.ConfigError) as e:
    with cli.usage_errors():
      startup.check_data_against_files(config)
  assert cli.exit_code(e.value) == cli.USAGE_ERROR and '\n' not in str(e.value)
  return str(e.value)


def test_split_sizes_come_from_the_shards_and_a_stale_metadata_json_is_named(small_data,
                                                                             tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from data_pipelines import reader  # pylint: disable=g-import-not-at-top
  from vivit_adapter.train_lib import startup  # pylint: disable=g-import-not-at-top
  files = sorted(str(p) for p in small_data.glob('train.tfrecord-*'))
  assert [dmvr_format.count_tfrecords(f) for f in files] == [4, 4]
  cut = tmp_path / 'cut.tfrecord'
  cut.write_bytes(open(files[0], 'rb').read()[:-10])
  assert dmvr_format.count_tfrecords(str(cut)) == reader.count_records([str(cut)]) == 4
  assert startup.check_data_against_files(_data_config(small_data)) == {'train': 8,
                                                                        'eval': 3}
  data = tmp_path / 'data'
  shutil.copytree(small_data, data)
  (data / 'metadata.json').write_text('{"splits": {"train": 1000, "validation": 3}}')
  assert _preflight_error(_data_config(data)) == (
      f"{data}/metadata.json: splits.train = 1000 but the 2 shard(s) of 'train.tfrecord@*' "
      'hold 8 records. Write metadata.json again with the data, or delete it (sizes are '
      'then counted).')
  # eval shards deleted but listed: refused now, not after an epoch of training.
  (data / 'metadata.json').write_text('{"splits": {"train": 8, "validation": 3}}')
  os.remove(data / 'validation.tfrecord-00000-of-00001')
  assert _preflight_error(_data_config(data)).startswith(
      f"{data}/metadata.json: splits.validation = 3 but config.dataset.eval_table has no "
      f"shards (Table '{data}/validation.tfrecord@*' matches no file.")
  (data / 'metadata.json').write_text('{"splits": {"train": 8,')
  assert re.fullmatch(
      rf'{data}/metadata\.json is not valid JSON \(.*\); write it again \(the converter and '
      r'the synthetic generator do\), or delete it: split sizes are then counted from the '
      r'shards\.', _preflight_error(_data_config(data)))


def test_empty_table_names_label_maps_and_batch_sizes_are_config_errors(small_data,
                                                                        tmp_path):
  from vivit_adapter.train_lib import startup  # pylint: disable=g-import-not-at-top
  assert _preflight_error(_data_config(small_data, eval_table='')) == (
      "Invalid config.dataset: eval_table='' names no table.")
  label_map = tmp_path / 'labels.txt'
  label_map.write_text('a\nb\n\nc\n')
  assert _preflight_error(_data_config(small_data, label_map=str(label_map))) == (
      f"Label map {str(label_map)!r}: line 3 is blank; write one class name per line.")
  label_map.write_text('a\nb\na\n')
  assert _preflight_error(_data_config(small_data, label_map=str(label_map))) == (
      f"Label map {str(label_map)!r}: class 'a' appears on lines 1 and 3.")
  config = _data_config(small_data)
  config.batch_size = 16
  assert _preflight_error(config) == (
      "config.batch_size=16 is larger than the training split (8 records in "
      "'train.tfrecord@*'): every batch would repeat records of one epoch. Lower "
      'config.batch_size.')
  config.batch_size, config.eval_batch_size = 8, 6  # the tests' 4 CPU devices
  with pytest.raises(cli.ConfigError, match=re.escape(
      'config.eval_batch_size=6 must be divisible by the number of devices (4) for data '
      'parallelism.')):
    with cli.usage_errors():
      startup.check_batch_sizes(config)


# ----------------------------------------------------------------------------------------
# The converter cannot mix datasets (issue 26).
# ----------------------------------------------------------------------------------------

def test_a_csv_header_is_known_by_its_column_names_and_duplicates_are_reported(tmp_path,
                                                                               capsys):
  csv_path = tmp_path / 'list.csv'
  csv_path.write_text('video_path,class_name\ngone.mp4,dog\ngone2.mp4,cat\n')
  report = convert_videos.convert(str(csv_path), f'{tmp_path}/o/train.tfrecord@1',
                                  num_workers=1, progress=False)
  assert (report['written'], report['skipped']) == (0, 2)
  assert (tmp_path / 'o' / 'label_map.txt').read_text() == 'cat\ndog\n'  # no 'class_name'
  # A first row whose video exists is data, whatever its label is called.
  (tmp_path / 'action').write_bytes(b'')
  (tmp_path / 'b.csv').write_text('action,label\n')
  assert convert_videos.read_csv_rows(str(tmp_path / 'b.csv')) == [(1, 'action', 'label')]
  rows = convert_videos.read_csv_rows(str(csv_path))
  capsys.readouterr()
  assert convert_videos.check_duplicates(rows + [(9, 'gone.mp4', 'dog')], 'l.csv') == [
      {'rows': [2, 9], 'path': 'gone.mp4'}]
  assert capsys.readouterr().err == (
      "Warning: CSV file 'l.csv', rows 2 and 9 name the same video 'gone.mp4'; it is "
      'converted twice.\n')
  with pytest.raises(ValueError) as e:
    convert_videos.check_duplicates(rows + [(9, 'gone.mp4', 'cat')], 'l.csv')
  assert str(e.value) == ("CSV file 'l.csv': rows 2 and 9 name the same video 'gone.mp4' "
                          "with different labels ('dog', 'cat'); keep one of them.")


def test_converting_into_a_folder_of_another_conversion_is_refused_or_replaced_whole(
    tmp_path, capsys):
  out = tmp_path / 'o'
  _tiny_table(str(out / 'train.tfrecord'), 4, 4)  # another dataset's 4 train shards
  (out / 'label_map.txt').write_text('0\n1\n2\n3\n')
  (out / 'notes.txt').write_text('mine')
  csv_path = tmp_path / 'list.csv'
  csv_path.write_text('gone.mp4,dog\n')
  code = convert_videos.main([f'--csv={csv_path}', f'--output={out}/train.tfrecord@2',
                              '--num_workers=1', '--no_progress'])
  assert code == cli.USAGE_ERROR
  assert capsys.readouterr().err.strip().splitlines() == [
      f"data_pipelines.convert_videos: error: {out} already holds a 'train' split (4 "
      'shard(s) such as train.tfrecord-00000-of-00004): converting into it would mix two '
      'conversions (and keep the old label map). Convert into a new folder, or pass '
      '--overwrite to replace the dataset in that folder whole (the shards of every split, '
      'metadata.json, label_map.txt and the reports).']
  assert len(list(out.glob('train.tfrecord-*'))) == 4
  report = convert_videos.convert(str(csv_path), f'{out}/train.tfrecord@2', num_workers=1,
                                  progress=False, overwrite=True)
  assert report['num_classes'] == 1
  assert sorted(os.listdir(out)) == [
      'label_map.txt', 'metadata.json', 'notes.txt', 'train.report.json',
      'train.tfrecord-00000-of-00002', 'train.tfrecord-00001-of-00002']
  assert (out / 'label_map.txt').read_text() == 'dog\n'


# ----------------------------------------------------------------------------------------
# Weak spots: one line and the code of the table (issue 26).
# ----------------------------------------------------------------------------------------

def test_an_experiment_file_with_a_syntax_error_or_an_undeclared_key_names_file_and_line(
    tmp_path):
  from vivit_adapter import config_loading  # pylint: disable=g-import-not-at-top
  syntax = tmp_path / 'syntax.py'
  syntax.write_text('from vivit_adapter import configs\n\ndef get_config(:\n  return 1\n')
  undeclared = tmp_path / 'undeclared.py'
  undeclared.write_text('from vivit_adapter import configs\n\ndef get_config():\n'
                        '  c = configs.base_config()\n  c.modle = 3\n  return c\n')
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.load_config(str(syntax))
  assert cli.exit_code(e.value) == cli.USAGE_ERROR
  assert str(e.value) == f'--config={syntax}, line 3: SyntaxError: invalid syntax.'
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.load_config(str(undeclared))
  assert str(e.value) == (
      f"--config={undeclared}, line 5: AttributeError: config has no key 'modle'; every "
      'key is declared, with its default, in vivit_adapter/configs.py.')


def test_validate_counts_an_empty_shard_as_bad(tmp_path, capsys):
  from data_pipelines import validate  # pylint: disable=g-import-not-at-top
  _tiny_table(str(tmp_path / 'train.tfrecord'), 3, 2)
  empty = tmp_path / 'train.tfrecord-00001-of-00002'
  empty.write_bytes(b'')
  assert validate.validate_tables([f'{tmp_path}/train.tfrecord@2'], 3, progress=False) == 1
  out = capsys.readouterr().out.strip().splitlines()
  assert out == [
      f'BAD {empty}: the file is empty (0 bytes, no record); copy or convert it again, or '
      'remove it',
      f'{tmp_path}/train.tfrecord@2: 2 records in 2 shard(s), 1 bad (labels checked '
      '[0, 3)); 1 empty shard(s): train.tfrecord-00001-of-00002.']


def test_a_damaged_checkpoint_is_bad_data_in_one_line_for_init_and_predict(tmp_path):
  import glob  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from vivit_adapter import checkpoints  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(f'{tmp_path}/checkpoints', item_names=('params',),
                               options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(4, args=ocp.args.Composite(params=ocp.args.StandardSave(
      {'head': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}})))
  mngr.wait_until_finished()
  mngr.close()
  assert checkpoints.restore_workdir_params(str(tmp_path))['head']['kernel'][1, 2] == 5.
  for path in glob.glob(f'{tmp_path}/checkpoints/4/params/**/d/*', recursive=True):
    with open(path, 'wb'):
      pass  # truncated, as an interrupted copy leaves it
  with pytest.raises(cli.DataError) as e:
    checkpoints.restore_workdir_params(str(tmp_path))
  assert cli.exit_code(e.value) == cli.DATA_ERROR and '\n' not in str(e.value)
  assert re.fullmatch(
      rf'Checkpoint {tmp_path}/checkpoints/4 cannot be read \(\w+: .*\): it is damaged or '
      r'incomplete \(an interrupted copy\?\)\. Copy it again, or use another step \(--step, '
      r'config\.init_from\.step\)\.', str(e.value)), str(e.value)


def test_ctrl_c_in_the_converter_says_it_restarts_in_one_line(tmp_path, monkeypatch, capsys):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(convert_videos, 'convert', interrupted)
  code = convert_videos.main([f'--csv={tmp_path}/l.csv', f'--output={tmp_path}/o/t.tfrecord@1'])
  assert code == cli.PREEMPTED
  assert capsys.readouterr().err == (
      'data_pipelines.convert_videos: stopped by SIGINT; no shard was left half-written and '
      'nothing was recorded in metadata.json; rerun the same command to convert this split '
      'again from the start.\n')


_BLOCKED_TRAINING = '''
import json, os, signal, sys, threading
import tensorflow as tf
from data_pipelines import interruptible, reader
from tests import trainer_utils as tu
from vivit_adapter.train_lib import trainer

config = tu.tiny_config(sys.argv[1])
config.dataset.num_classes, config.batch_size, config.eval_batch_size = 8, 4, 4
config.num_training_steps, config.checkpoint_steps = 6, 100
spin = iter(tf.data.Dataset.range(2**62).filter(lambda x: x < 0))
fetches, real_next = [], reader.TrainIterator.__next__

def third_fetch_blocks(self):  # the input pipeline stalls before step 3
  fetches.append(1)
  if len(fetches) == 3:
    threading.Timer(1.0, os.kill, [os.getpid(), signal.SIGTERM]).start()
    interruptible.next_of(spin, 'training data')
  return real_next(self)

reader.TrainIterator.__next__ = third_fetch_blocks
print(json.dumps(trainer.train_and_evaluate(config, sys.argv[2])), flush=True)
os._exit(0)  # the spinning fetch thread would hold the teardown (cli.run does this)
'''


def test_sigterm_while_training_waits_for_data_saves_the_last_step_and_stops(small_data,
                                                                               tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  script = tmp_path / 'blocked_training.py'
  script.write_text(_BLOCKED_TRAINING)
  proc = subprocess.run([tu.sys.executable, str(script), str(small_data),
                         str(tmp_path / 'run')], cwd=tu.REPO, env=tu.env(),
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
      'preempted': 'SIGTERM', 'step': 2, 'saved': True}
  assert os.listdir(tmp_path / 'run' / 'checkpoints') == ['2']
