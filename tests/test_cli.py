"""data_pipelines.cli: one-line errors, exit codes, signals, quiet logs, fast --help."""

import errno
import os
import re
import signal
import subprocess
import sys
import time

from absl import flags
from absl import logging
import pytest

from data_pipelines import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The programs a user starts; `_programs()` must find each of them.
KNOWN_PROGRAMS = ('vivit_adapter.main', 'vivit_adapter.predict', 'vivit_adapter.extract_features',
            'vivit_adapter.benchmark', 'vivit_adapter.benchmark_data', 'vivit_adapter.demo',
            'vivit_adapter.ablation', 'vivit_adapter.image_pretrain',
            'data_pipelines.validate', 'data_pipelines.convert_videos',
            'data_pipelines.synthetic')


def _programs():
  """Every module of the two packages that runs as a program (`python -m ...`), the
  benchmark tools included."""
  found = []
  for package in ('vivit_adapter', 'data_pipelines'):
    for root, _, names in os.walk(os.path.join(REPO, package)):
      for name in names:
        path = os.path.join(root, name)
        with open(path, errors='replace') as f:
          if name.endswith('.py') and "if __name__ == '__main__':" in f.read():
            found.append(os.path.relpath(path, REPO)[:-3].replace(os.sep, '.'))
  return sorted(found)


PROGRAMS = _programs()


def test_every_known_program_is_found():
  assert set(KNOWN_PROGRAMS) <= set(PROGRAMS), sorted(set(KNOWN_PROGRAMS) - set(PROGRAMS))


def _raising(error):
  def main():
    raise error
  return main


@pytest.mark.parametrize('error, code', [
    (cli.ConfigError('config.x=3 must be > 4.'), cli.USAGE_ERROR),
    (cli.DataError('3 bad records'), cli.DATA_ERROR),
    (cli.CheckpointMismatchError('64 in the checkpoint'), cli.CHECKPOINT_MISMATCH),
    (cli.DivergedError('loss is nan'), cli.DIVERGED),
    (FileNotFoundError('Table x matches no file.'), cli.USAGE_ERROR),
    (OSError(errno.ENOSPC, 'No space left on device', '/ckpt'), cli.IO_ERROR),
    (PermissionError(errno.EACCES, 'Permission denied', '/ro'), cli.IO_ERROR),
    (flags.IllegalFlagValueError('--top_k=0'), cli.USAGE_ERROR),
])
def test_user_errors_are_one_line_with_their_code(error, code, capsys):
  assert cli.run(_raising(error), program='prog') == code
  err = capsys.readouterr().err
  assert err.startswith('prog: error: ') and err.count('\n') == 1, err
  assert 'Traceback' not in err


def test_disk_full_says_what_is_intact(capsys):
  cli.run(_raising(OSError(errno.ENOSPC, 'No space left on device', '/ckpt/7')),
          program='prog')
  assert capsys.readouterr().err == (
      'prog: error: /ckpt/7: No space left on device; free some space or write elsewhere '
      '(a checkpoint or shard being written is discarded whole; earlier ones are intact)\n')


def test_a_bug_keeps_its_traceback_and_its_own_code(capsys):
  assert cli.run(_raising(KeyError('params')), program='prog') == cli.INTERNAL_ERROR
  err = capsys.readouterr().err
  assert 'Traceback' in err and "KeyError: 'params'" in err
  assert err.splitlines()[-1].startswith("prog: internal error: KeyError: 'params' (exit 70")


def test_multi_line_message_leads_with_its_summary(capsys):
  cli.run(_raising(cli.CheckpointMismatchError('64 vs 32\nshape mismatch (2):\n  a: (64,)')),
          program='prog')
  assert capsys.readouterr().err.splitlines() == [
      'prog: error: 64 vs 32', '  shape mismatch (2):', '    a: (64,)']


def test_verbosity_1_prints_the_traceback_first(capsys):
  old = logging.get_verbosity()
  logging.set_verbosity(logging.DEBUG)
  try:
    cli.run(_raising(cli.ConfigError('bad')), program='prog')
  finally:
    logging.set_verbosity(old)
  err = capsys.readouterr().err
  assert err.startswith('Traceback') and err.endswith('prog: error: bad\n')


def test_usage_errors_marks_value_errors_as_the_users():
  with pytest.raises(cli.ConfigError, match='config.x'):
    with cli.usage_errors():
      raise ValueError('config.x must be positive')
  with pytest.raises(cli.CheckpointMismatchError):  # a UserError keeps its kind
    with cli.usage_errors():
      raise cli.CheckpointMismatchError('x')


def test_signals_exit_preempted(capsys):
  assert cli.run(_raising(KeyboardInterrupt()), program='prog') == cli.PREEMPTED
  assert 'interrupted (SIGINT)' in capsys.readouterr().err
  previous = signal.getsignal(signal.SIGTERM)
  cli.start()
  try:
    def main():
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises first
    assert cli.run(main, program='prog') == cli.PREEMPTED
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert capsys.readouterr().err == (
      'prog: stopped by SIGTERM; nothing was left half-written; rerun the same command to '
      'continue (a run resumes from its last checkpoint).\n')


def test_a_swallowed_stop_still_exits_preempted(capsys):
  # A signal whose handler runs inside a gc callback: Python prints "Exception ignored"
  # and carries on; the program must still exit 75, not with what it did next.
  previous = signal.getsignal(signal.SIGTERM)
  cli.start()
  try:
    def main():
      try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
      except SystemExit:
        pass  # swallowed
      raise FileNotFoundError('Table x matches no file.')
    assert cli.run(main, program='prog') == cli.PREEMPTED
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert capsys.readouterr().err.startswith('prog: stopped by SIGTERM; ')


def test_preempted_is_a_system_exit_with_the_code():
  # Uncaught, it still exits 75, and the studies'
  # `except SystemExit` callers see it.
  error = cli.Preempted('stopped')
  assert isinstance(error, SystemExit) and error.code == cli.PREEMPTED
  assert str(error) == 'stopped'


def test_a_signal_before_run_exits_preempted_with_its_line():
  # Start-up (imports, flag parsing) under a loaded machine can take seconds: a SIGTERM
  # there says why the program stopped, as it does later, and to the program's own
  # stderr even while a quiet import has fd 2 pointed elsewhere.
  code = ('import os, signal, sys, time\n'
          'from data_pipelines import cli\n'
          "sys.argv[0] = 'prog'\n"
          'cli.start()\n'
          "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # as during a quiet import\n"
          'os.kill(os.getpid(), signal.SIGTERM)\n'
          'time.sleep(5)\n'
          "print('not reached')\n")
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                       text=True, timeout=60, check=False)
  assert (out.returncode, out.stdout) == (cli.PREEMPTED, '')
  assert out.stderr == (
      'prog: stopped by SIGTERM; nothing was left half-written; rerun the same command to '
      'continue (a run resumes from its last checkpoint).\n')


def test_flags_parser_bad_flag_exits_2_and_help_exits_0(capsys):
  values = flags.FlagValues()
  flags.DEFINE_integer('top_k', 5, 'k', lower_bound=1, flag_values=values)
  parser = cli.absl_flags_parser(values)
  with pytest.raises(SystemExit) as e:
    parser(['prog', '--top_k=0'])
  assert e.value.code == cli.USAGE_ERROR
  assert re.fullmatch(r'\S+: error: flag --top_k=0: .*\n', capsys.readouterr().err)
  assert parser(['prog', '--top_k=3']) == ['prog']


def test_library_info_lines_are_dropped_ours_kept():
  record = lambda path, level: logging.logging.LogRecord('absl', level, path, 1, 'm', (),
                                                         None)
  keep = cli._LibraryInfoFilter().filter  # pylint: disable=protected-access
  assert not keep(record('/site-packages/orbax/checkpoint/x.py', logging.logging.INFO))
  assert keep(record('/site-packages/orbax/checkpoint/x.py', logging.logging.WARNING))
  assert keep(record(f'{REPO}/vivit_adapter/train_lib/trainer.py', logging.logging.INFO))


def test_the_training_doc_lists_the_exit_codes():
  with open(os.path.join(REPO, 'docs', 'training.md')) as f:
    assert cli.code_table() in f.read()


_HELP = '''
import runpy, sys
module = sys.argv[1]
sys.argv = [module, '--help']
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
except SystemExit as e:
  code = e.code
# A cli.lazy_module that was never used is registered but not loaded.
heavy = [m for m in ('tensorflow', 'jax', 'flax', 'orbax', 'torch')
         if type(sys.modules.get(m)).__name__ not in ('NoneType', '_LazyModule')]
print('RESULT', code or 0, ','.join(heavy) or 'none')
'''


@pytest.mark.parametrize('program', PROGRAMS)
def test_help_answers_without_tensorflow_or_jax(program):
  proc = subprocess.run([sys.executable, '-c', _HELP, program], cwd=REPO, text=True,
                        capture_output=True, timeout=60, check=False)
  result = proc.stdout.strip().splitlines()[-1]
  assert result == 'RESULT 0 none', (result, proc.stderr[-2000:])
  assert 'usage' in proc.stdout.lower() or '--' in proc.stdout
