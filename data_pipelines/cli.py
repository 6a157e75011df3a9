"""What every program of this project does with errors, exit codes, signals and logs.

One place, so that a scheduler and a user see the same thing from every command
(`vivit_adapter.*` and `data_pipelines.*` alike; this module imports neither JAX nor
TensorFlow, so `--help` stays fast):

* a user's mistake (a bad flag or config value, a missing file, bad data, a checkpoint
  that does not fit the model) prints `<program>: error: <what, where, what to do>` on
  stderr and exits with the code of its kind, without a traceback (with --verbosity=1
  the traceback is printed first);
* a bug (any other exception) keeps its traceback and exits INTERNAL_ERROR;
* SIGTERM or SIGINT (preemption, Ctrl-C) exits PREEMPTED, after the training loop has
  saved a checkpoint when it was running;
* INFO lines of libraries (orbax, jax, TensorFlow) are dropped unless --verbosity=1;
  the project's own INFO lines stay.

The exit codes are the constants below; docs/training.md ("Errors and exit codes") lists them
(a test checks that it matches `code_table()`).
"""

import contextlib
import errno
import importlib.util
import logging as std_logging
import os
import signal
import sys
import threading
import traceback
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

OK = 0
DATA_ERROR = 1  # bad records over the threshold, validate found bad records, too many skipped videos
USAGE_ERROR = 2  # a flag, config value, path or workdir the command cannot use
CHECKPOINT_MISMATCH = 3  # a checkpoint that does not fit the configured model
DIVERGED = 4  # the training loss became NaN or infinite
INTERNAL_ERROR = 70  # a bug (EX_SOFTWARE): the traceback is printed
IO_ERROR = 74  # cannot write: disk full, read-only or forbidden path (EX_IOERR)
PREEMPTED = 75  # stopped by SIGTERM/SIGINT, state saved where it could be (EX_TEMPFAIL): requeue

# code -> (what happened, what a scheduler or user does about it)
EXIT_CODES = {
    OK: ('success', 'done'),
    DATA_ERROR: ('bad data: too many bad records, `validate` found some, the converter '
                 'skipped too many videos', 'fix the data; do not retry as is'),
    USAGE_ERROR: ('usage or config error: a flag, config key or value, a missing file, a '
                  'workdir that holds another config', 'fix the command; do not retry'),
    CHECKPOINT_MISMATCH: ('a checkpoint does not fit the configured model',
                          'fix config.model or the checkpoint path; do not retry'),
    DIVERGED: ('training diverged (NaN or infinite loss)',
               'lower the learning rate; do not retry as is'),
    INTERNAL_ERROR: ('internal error (a bug); the traceback is printed', 'report it'),
    IO_ERROR: ('cannot write: disk full, read-only or forbidden path',
               'free space or fix permissions, then rerun (resumes)'),
    PREEMPTED: ('stopped by SIGTERM/SIGINT; a checkpoint was saved if training was '
                'running', 'requeue: rerun the same command to resume'),
}

# Seconds a stopped program has to unwind after SIGTERM/SIGINT before it is made to exit.
_EXIT_GRACE_S = 10.
_HELP_ARGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')
_IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# TensorFlow's file errors (tf.io.gfile on local paths and URLs), by class name so that
# this module need not import TensorFlow.
_TF_ERRORS = {'NotFoundError': USAGE_ERROR, 'PermissionDeniedError': IO_ERROR,
              'DataLossError': DATA_ERROR, 'FailedPreconditionError': USAGE_ERROR}


class UserError(Exception):
  """A mistake the user can fix: reported in one line, no traceback."""
  exit_code = USAGE_ERROR


class ConfigError(UserError, ValueError):
  """A flag, config value or path the command cannot use."""


class DataError(UserError):
  """The data is bad: too many bad records, or a table that cannot be read."""
  exit_code = DATA_ERROR


class CheckpointMismatchError(UserError, ValueError):
  """A checkpoint whose parameters do not fit the model the config builds."""
  exit_code = CHECKPOINT_MISMATCH


class DivergedError(UserError, FloatingPointError):
  """The training loss is not finite."""
  exit_code = DIVERGED


class Preempted(SystemExit):
  """Stopped by a signal. A SystemExit carrying PREEMPTED, so that even when nothing
  catches it (a signal during start-up) the process exits with the right code."""

  def __init__(self, message: str):
    super().__init__(PREEMPTED)
    self.message = message

  def __str__(self) -> str:
    return self.message


@contextlib.contextmanager
def usage_errors():
  """Marks start-up checks: a ValueError raised in them is a bad value of the user's
  (reported in one line, USAGE_ERROR), not a bug."""
  try:
    yield
  except UserError:
    raise
  except ValueError as e:
    raise ConfigError(message(e)) from e


def program_name() -> str:
  """'vivit_adapter.main' for `python -m vivit_adapter.main`, else the script's name."""
  spec = getattr(sys.modules.get('__main__'), '__spec__', None)
  if spec is not None and spec.name and spec.name != '__main__':
    return spec.name
  return os.path.basename(sys.argv[0] or 'python')


def exit_code(error: BaseException) -> Optional[int]:
  """The exit code of a user-facing error; None for a bug (keep the traceback)."""
  if isinstance(error, UserError):
    return error.exit_code
  if isinstance(error, KeyboardInterrupt):
    return PREEMPTED
  if isinstance(error, (flags.Error, app.UsageError)):
    return USAGE_ERROR
  if isinstance(error, OSError) and error.errno in _IO_ERRNOS:
    return IO_ERROR
  if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                        FileExistsError)):
    return USAGE_ERROR
  if type(error).__module__.startswith('tensorflow'):
    return _TF_ERRORS.get(type(error).__name__)
  return None


def message(error: BaseException) -> str:
  """The error's text, without the decorations Python and TensorFlow add."""
  if isinstance(error, OSError) and error.strerror and error.filename:
    text = f'{error.filename}: {error.strerror}'
    if error.errno == errno.ENOSPC:
      text += ('; free some space or write elsewhere (a checkpoint or shard being '
               'written is discarded whole; earlier ones are intact)')
    elif error.errno in _IO_ERRNOS:
      text += '; choose a path this user can write to'
    return text
  text = getattr(error, 'message', None) if type(error).__module__.startswith(
      'tensorflow') else None
  text = str(text or error).strip()
  return text or type(error).__name__


def verbose() -> bool:
  """Whether --verbosity >= 1 (absl's DEBUG): show tracebacks and library logs."""
  return logging.get_verbosity() >= logging.DEBUG


def report(program: str, error: BaseException) -> None:
  """`<program>: error: <first line>` on stderr, further lines indented under it."""
  if verbose():
    traceback.print_exception(error, file=sys.stderr)
  lines = message(error).splitlines()
  sys.stderr.write(f'{program}: error: {lines[0]}\n')
  for line in lines[1:]:
    sys.stderr.write(f'  {line}\n')
  sys.stderr.flush()


def run(main: Callable[..., Optional[int]], *args, program: str = '') -> int:
  """Calls `main(*args)` and returns the process's exit code (see the module docstring).

  `main` returns None (success) or an exit code; user errors, signals and bugs become
  their codes here.
  """
  outer, _stop.in_run = _stop.in_run, True
  try:
    return _run(main, *args, program=program or program_name())
  finally:
    _stop.in_run = outer


def _run(main: Callable[..., Optional[int]], *args, program: str) -> int:
  try:
    code = main(*args)
  except Preempted as e:
    _signal_handled()
    sys.stderr.write(f'{program}: {e.message}\n')
    _exit_now_if_blocked()
    return PREEMPTED
  except SystemExit:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    code = exit_code(e)
    if _stop.signal:  # the Preempted was swallowed on the way (see _raise_preempted)
      return _preempted_after(program, e)
    if code is None:
      traceback.print_exception(e, file=sys.stderr)
      sys.stderr.write(f'{program}: internal error: {type(e).__name__}: {message(e)} '
                       f'(exit {INTERNAL_ERROR}; a bug: please report it with the '
                       'traceback above)\n')
      return INTERNAL_ERROR
    if code == PREEMPTED:  # Ctrl-C outside the training loop
      sys.stderr.write(f'{program}: interrupted (SIGINT); nothing was left half-written; '
                       'rerun the same command to continue.\n')
      return PREEMPTED
    report(program, e)
    return code
  if _stop.signal:
    return _preempted_after(program, None)
  return code if isinstance(code, int) else OK


def absl_main(main: Callable[[Sequence[str]], Optional[int]]) -> Callable:
  """`main` for `app.run`: errors and signals handled by `run`."""
  return lambda argv: run(main, argv)


def absl_flags_parser(parse: Optional[Callable[[Sequence[str]], list]] = None) -> Callable:
  """A `flags_parser` for `app.run`: a bad flag is a one-line error and USAGE_ERROR
  (absl exits 1, the code of bad data here), and --help exits 0 (absl: 1)."""
  def parser(argv):
    try:
      return (parse or flags.FLAGS)(list(argv))
    except flags.Error as e:
      sys.stderr.write(f'{program_name()}: error: {message(e)}\n')
      sys.exit(USAGE_ERROR)
    except SystemExit as e:
      if e.code == 1 and any(a.split('=')[0] in _HELP_ARGS for a in argv[1:]):
        sys.exit(OK)
      raise
  return parser


class _LibraryInfoFilter(std_logging.Filter):
  """Drops INFO and DEBUG records that do not come from this project's packages."""

  def filter(self, record) -> bool:
    if record.levelno >= std_logging.WARNING or verbose():
      return True
    path = record.pathname.replace(os.sep, '/')
    return '/vivit_adapter/' in path or '/data_pipelines/' in path


def quiet_library_logs() -> None:
  """Library INFO lines (orbax: dozens per checkpoint) off unless --verbosity=1."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())


class _Stop:
  """The signal that stopped the program, the exit it arms, and the stderr it writes to:
  the program's own, kept by `start` (a quiet import points fd 2 elsewhere for a moment,
  see data_pipelines.tf_runtime, and the forced exit may come just then); `requested`: a
  signal a handler only noted (the training loop's PreemptionWatcher), for waits that
  must end on it (`check_stop`)."""
  signal = ''
  requested = ''
  timer: Optional[threading.Timer] = None
  stderr_fd = 2
  in_run = False  # whether `run` is on the stack to report the stop
  program = False  # start() was called: this process is a program, not a test or notebook
  blocked = False  # a stop left a thread blocked in C++ (`left_a_thread_blocked`)


_stop = _Stop()


def _stop_message(name: str) -> str:
  return (f'stopped by {name}; nothing was left half-written; rerun the same command to '
          'continue (a run resumes from its last checkpoint).')


def _raise_preempted(signum, frame) -> None:
  """SIGTERM/SIGINT outside the training loop: unwind with Preempted.

  Python ignores an exception raised in a garbage-collection callback or a __del__
  (where a signal handler may happen to run), so the raise alone is not enough: the
  signal is remembered (`run` then exits PREEMPTED whatever `main` did next), and a timer
  ends the process if it is still running after _EXIT_GRACE_S. Before `run` (imports,
  flag parsing) nothing has started and nothing would report the stop: exit at once.
  """
  del frame
  _stop.signal = signal.Signals(signum).name
  if not _stop.in_run:
    _exit_now(_stop_message(_stop.signal))
  if _stop.timer is None:
    _stop.timer = threading.Timer(_EXIT_GRACE_S, _exit_now, [_stop_message(_stop.signal)])
    _stop.timer.daemon = True
    _stop.timer.start()
  raise Preempted(_stop_message(_stop.signal))


def stop_signal_name(error: Preempted) -> str:
  """'SIGTERM' of a Preempted raised by a signal handler ('SIGTERM' when unknown)."""
  words = str(error).split()
  return words[2].rstrip(';') if len(words) > 2 and words[:2] == ['stopped', 'by'] else (
      'SIGTERM')


def request_stop(name: str) -> None:
  """Notes a SIGTERM/SIGINT whose handler only sets a flag (PreemptionWatcher), so that
  a wait on input data ends on it too (`check_stop`); `name` '' clears it."""
  _stop.requested = name


def check_stop(waiting_for: str) -> None:
  """Raises Preempted when a stop signal arrived: for loops that wait on other threads
  (an input pipeline), where a handler's own exception may never surface.

  The thread left waiting may stay blocked: see `left_a_thread_blocked`.
  """
  name = _stop.requested or _stop.signal
  if not name:
    return
  text = (f'stopped by {name} while waiting for {waiting_for}; rerun the same command to '
          'continue (a run resumes from its last checkpoint).')
  left_a_thread_blocked(text)
  raise Preempted(text)


def left_a_thread_blocked(text: str) -> None:
  """A stop left a thread blocked in C++ (a tf.data fetch): `run` ends the process as
  soon as the program is done (`_exit_now_if_blocked`). No timer: the training loop may
  still be saving a checkpoint, however long that takes."""
  del text
  _stop.blocked = True


def _exit_now_if_blocked() -> None:
  """After a program's last line: a thread left blocked in C++ holds the interpreter's
  teardown (tf.data's waits on it), so a program (`start` was called) ends here. Its
  files are closed: the training loop saved and closed them before returning."""
  if _stop.blocked and _stop.program:
    _exit_now('')


def _exit_now(message: str) -> None:
  sys.stderr.flush()
  sys.stdout.flush()
  if message:
    os.write(_stop.stderr_fd, f'{program_name()}: {message}\n'.encode())
  os._exit(PREEMPTED)  # pylint: disable=protected-access


def _signal_handled() -> None:
  if _stop.timer is not None:
    _stop.timer.cancel()
  _stop.signal, _stop.requested, _stop.timer = '', '', None


def _preempted_after(program: str, error: Optional[BaseException]) -> int:
  """The exit of a program whose Preempted was swallowed: PREEMPTED all the same."""
  message = _stop_message(_stop.signal)
  _signal_handled()
  if error is not None and exit_code(error) is None:
    traceback.print_exception(error, file=sys.stderr)
  sys.stderr.write(f'{program}: {message}\n')
  return PREEMPTED


def start() -> None:
  """Program start, before anything heavy is imported: quiet TensorFlow's C++ start-up
  lines, and make SIGTERM exit PREEMPTED (Python's default is to die with 143 and no
  message). The training loop installs its own handler that saves first."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  _stop.program = True
  if _stop.stderr_fd == 2:
    try:
      _stop.stderr_fd = os.dup(2)
    except OSError:  # no stderr
      pass
  try:
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, _raise_preempted)
  except ValueError:  # not the main thread
    pass


def lazy_module(name: str):
  """Module `name`, executed on its first attribute access (importlib's LazyLoader).

  For a program module whose functions use JAX (or code that imports it) at module
  level: `jax = cli.lazy_module('jax')` keeps `jax.devices()` working there while
  --help never loads JAX. Prefer a plain import inside the function that needs it.
  """
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def add_verbosity_flag(parser) -> None:
  """--verbosity for the argparse programs, as absl's: 1 shows tracebacks and library logs."""
  parser.add_argument('--verbosity', '-v', type=int, default=None,
                      help='1: tracebacks of errors and library INFO logs')


def set_verbosity(level: Optional[int]) -> None:
  if level is not None:
    logging.set_verbosity(level)


def code_table() -> str:
  """The exit codes as a Markdown table (the copy in docs/training.md is checked against it)."""
  rows = [f'| {code} | {what} | {action} |' for code, (what, action) in EXIT_CODES.items()]
  return '\n'.join(['| exit code | meaning | then |', '|---|---|---|'] + rows)
