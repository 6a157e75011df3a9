"""Multi-host semantics, with 2 CPU processes on localhost (jax.distributed over gloo),
each the training CLI with --coordinator_address, --num_processes and --process_id.

What a Cloud TPU slice does with one process per host: each process reads its own,
disjoint share of every table's files; evaluation counts every example exactly once
across processes (hosts with fewer examples pad with masked ones); only process 0 writes
config.json, history, TensorBoard events, summary.json and the curves; every process
takes part in each checkpoint save (orbax writes collectively); a table with fewer files
than processes stops the run at start with an error naming it.
"""

import collections
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import data_pipelines
from data_pipelines import fs
from data_pipelines import reader
from data_pipelines import synthetic
from tests import trainer_utils as tu

# One process of the run: the real CLI (vivit_adapter.main run as the program, with
# --coordinator_address, --num_processes and --process_id), with the trainer's writers
# spied on, then what this process reads of the training and test tables.
CHILD = textwrap.dedent('''
    import hashlib, json, runpy, sys
    address, index, config_path, workdir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    import jax
    import data_pipelines
    from data_pipelines import reader
    from vivit_adapter import config_loading, configs
    from vivit_adapter.train_lib import checkpointing, reporting, trainer

    calls, summaries = [], []
    def spy(module, name):
      real = getattr(module, name)
      def wrapped(*args, **kwargs):
        calls.append(module.__name__.split('.')[-1] + '.' + name)
        return real(*args, **kwargs)
      setattr(module, name, wrapped)
    for module, name in [(configs, 'save'), (reporting, 'write_summary'),
                         (reporting, 'plot_curves'), (checkpointing, 'save')]:
      spy(module, name)
    real_train = trainer.train_and_evaluate
    def train(*args, **kwargs):
      summaries.append(real_train(*args, **kwargs))
      return summaries[-1]
    trainer.train_and_evaluate = train

    overrides = ['num_training_steps=3', 'run_test=True', 'class_report.at_eval=True']
    sys.argv = ['vivit_adapter.main', f'--config={config_path}', f'--workdir={workdir}',
                f'--coordinator_address={address}', '--num_processes=2',
                f'--process_id={index}', *[f'--config.{o}' for o in overrides]]
    try:
      runpy.run_module('vivit_adapter.main', run_name='__main__', alter_sys=True)
    except SystemExit as e:
      if e.code:
        raise
    (summary,) = summaries
    config = config_loading.load_config(config_path, overrides)
    source = reader.make_source(config.dataset, 'train')
    train_files = reader.host_files(source.files, jax.process_index(), jax.process_count())
    test = [hashlib.sha1(b['inputs'][i].tobytes() + bytes([b['label'][i]])).hexdigest()
            for b in data_pipelines.make_eval_iterator(config.dataset, 'test', batch_size=2)
            for i in range(len(b['label'])) if b['batch_mask'][i]]
    print('RESULT ' + json.dumps({
        'process': jax.process_index(), 'calls': calls, 'train_files': train_files,
        'test': test, 'eval_count': summary['eval']['count'],
        'test_count': summary['test']['count'],
        'mean_class_accuracy': [summary[k]['mean_class_accuracy'] for k in ('eval', 'test')]}))
''')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _dataset(path, num_shards):
  synthetic.generate(str(path), seed=0, resolution=32, num_frames=16, train_per_class=4,
                     val_per_class=1, test_per_class=1, num_shards=num_shards,
                     progress=False)
  return str(path)


def _run_two(command):
  """Runs command(process_index, port) as 2 processes; returns [(returncode, out, err)]."""
  port = _free_port()
  procs = [subprocess.Popen(command(i, port), cwd=tu.REPO, env=tu.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  return [(p.returncode, *out) for p, out in
          ((p, p.communicate(timeout=600)) for p in procs)]


def _test_hashes(config):
  """What one process alone reads of the test split, as the children hash it."""
  return [hashlib.sha1(b['inputs'][i].tobytes() + bytes([b['label'][i]])).hexdigest()
          for b in data_pipelines.make_eval_iterator(config.dataset, 'test', batch_size=2,
                                                     process_index=0, process_count=1)
          for i in range(len(b['label'])) if b['batch_mask'][i]]


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  # 3 shards over 2 processes: process 0 reads two, process 1 one, so their shares of
  # each split differ in size and the smaller one must pad.
  base_dir = _dataset(tmp_path_factory.mktemp('data'), num_shards=3)
  config_path = tu.write_config(tmp_path_factory.mktemp('config'), base_dir)
  workdir = str(tmp_path_factory.mktemp('run'))
  results = _run_two(lambda i, port: [sys.executable, '-c', CHILD, f'127.0.0.1:{port}',
                                      str(i), config_path, workdir])
  for code, _, err in results:
    assert code == 0, err[-4000:]
  outputs = [json.loads(line[len('RESULT '):]) for _, out, _ in results
             for line in out.splitlines() if line.startswith('RESULT ')]
  return base_dir, workdir, sorted(outputs, key=lambda o: o['process'])


def test_each_process_reads_a_disjoint_share_of_the_shards(two_process_run):
  base_dir, _, (p0, p1) = two_process_run
  files = reader.make_source(tu.tiny_config(base_dir).dataset, 'train').files
  assert len(p0['train_files']) == 2 and len(p1['train_files']) == 1
  assert not set(p0['train_files']) & set(p1['train_files'])
  assert sorted(p0['train_files'] + p1['train_files']) == files


def test_evaluation_counts_every_example_exactly_once(two_process_run):
  base_dir, _, (p0, p1) = two_process_run
  config = tu.tiny_config(base_dir)
  info = data_pipelines.dataset_info(config.dataset)
  assert len(p0['test']) != len(p1['test'])  # unequal shares: padding was needed
  together = collections.Counter(p0['test'] + p1['test'])
  assert together == collections.Counter(_test_hashes(config))
  assert sum(together.values()) == info.num_test_examples
  for p in (p0, p1):  # the trainer's own metrics, reduced over both processes
    assert p['eval_count'] == info.num_eval_examples
    assert p['test_count'] == info.num_test_examples
  # The class reports too: each video once, from both processes' shards, and one mean
  # class accuracy that both processes computed from all of them.
  _, workdir, _ = two_process_run
  for kind, size in (('eval', info.num_eval_examples), ('test', info.num_test_examples)):
    source = reader.make_source(config.dataset, kind)
    every = sorted((f, i) for f in source.files for i in range(reader.count_records([f])))
    with fs.open(os.path.join(workdir, f'{kind}_predictions.jsonl')) as f:
      lines = [json.loads(line) for line in f]
    assert sorted((l['shard'], l['record']) for l in lines) == every and len(every) == size
    with fs.open(os.path.join(workdir, f'{kind}_per_class.json')) as f:
      report = json.load(f)
    assert sum(map(sum, report['confusion'])) == report['count'] == size
  assert p0['mean_class_accuracy'] == p1['mean_class_accuracy']


def test_only_process_0_writes_reports_and_both_save_checkpoints(two_process_run):
  _, workdir, (p0, p1) = two_process_run
  assert sorted(p0['calls']) == ['checkpointing.save', 'configs.save',
                                 'reporting.plot_curves', 'reporting.write_summary']
  assert p1['calls'] == ['checkpointing.save']  # orbax saves collectively
  with fs.open(os.path.join(workdir, 'history.jsonl')) as f:
    train_steps = [json.loads(line)['step'] for line in f if '"train"' in line]
  assert train_steps == [1, 2, 3]  # one writer, not two
  assert len([n for n in os.listdir(workdir) if n.startswith('events.out')]) == 1
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
  assert set(tu.final_params(workdir)) >= {'embedding/kernel'}


def test_two_processes_on_localhost_train_and_checkpoint_through_the_cli(two_process_run):
  _, workdir, _ = two_process_run
  with fs.open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['processes'] == 2 and summary['step'] == 3


def test_fewer_shards_than_processes_stops_every_process_at_start(tmp_path):
  config_path = tu.write_config(tmp_path, _dataset(tmp_path / 'data', num_shards=1))
  results = _run_two(lambda i, port: tu.main_command(
      config_path, str(tmp_path / 'run'), f'--coordinator_address=127.0.0.1:{port}',
      '--num_processes=2', f'--process_id={i}'))
  for code, _, err in results:
    assert code == 2, err[-3000:]  # cli.USAGE_ERROR
    assert 'has 1 file(s) but there are 2 hosts' in err, err[-3000:]
    assert 'Traceback' not in err
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
