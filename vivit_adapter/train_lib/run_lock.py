"""One run per workdir: a second `main` on a workdir in use is refused in one line.

Two runs on one workdir interleave their checkpoints and reports (orbax errors, every
step three times in history.jsonl). On a local file system the lock is `fcntl.flock` on
the workdir directory itself: the kernel drops it when the process ends, however it ends
(kill -9 included), so a lock is never stale, and it leaves no file behind. Who holds it
is written to WORKDIR/.run.lock (host, pid, start time) for the message; that file is
only informative and is removed at exit.

A gs:// (or other URL) workdir has no flock: the same file is the lock. One left by a
process of this host that no longer runs is taken over (with a warning); one from
another host cannot be checked, so it is reported and the run goes on (see
docs/reliability.md, "Not handled"). Only process 0 locks: the processes of one
multi-host run share the workdir.
"""

import atexit
import datetime
import json
import os
import socket
from typing import Optional

from absl import logging

from data_pipelines import cli
from data_pipelines import fs

LOCK_FILE = '.run.lock'
_held = {}  # workdir -> open directory fd (local) or lock path (URL): held until exit


def _holder() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now(datetime.timezone.utc).strftime(
              '%Y-%m-%d %H:%M:%S UTC')}


def _read_holder(path: str) -> Optional[dict]:
  try:
    with fs.open(path) as f:
      return json.load(f)
  except Exception:  # pylint: disable=broad-except
    return None  # missing, or half written by a holder killed mid-write


def _describe(holder: Optional[dict]) -> str:
  if not holder:
    return 'another process'
  return (f'pid {holder.get("pid")} on host {holder.get("host")}, started '
          f'{holder.get("started")}')


class InUse(cli.ConfigError):
  """Another live process holds the workdir (the studies skip such a run: another
  study process on the same workdir is making it)."""


def _refusal(workdir: str, holder: Optional[dict]) -> InUse:
  return InUse(
      f'--workdir={workdir} is in use by another run ({_describe(holder)}; '
      f'{os.path.join(workdir, LOCK_FILE)}). Wait for it to end or stop it, or use another '
      '--workdir: two runs on one workdir overwrite each other\'s checkpoints.')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _acquire_local(workdir: str) -> None:
  import fcntl  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(workdir, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise _refusal(workdir, _read_holder(path)) from None
  _held[workdir] = fd
  fs.atomic_write(path, json.dumps(_holder()))


def _acquire_url(workdir: str) -> None:
  path = os.path.join(workdir, LOCK_FILE)
  holder = _read_holder(path)
  if holder and holder.get('host') == socket.gethostname():
    if _pid_alive(int(holder.get('pid', -1))) and holder.get('pid') != os.getpid():
      raise _refusal(workdir, holder)
    logging.warning('Taking over the lock of a run that no longer runs (%s): %s.',
                    _describe(holder), path)
  elif holder:
    logging.warning('%s names a run on another host (%s), which cannot be checked from '
                    'here; if it still runs, stop one of the two.', path, _describe(holder))
  fs.atomic_write(path, json.dumps(_holder()))
  _held[workdir] = path


def acquire(workdir: str, process_index: int = 0) -> None:
  """Locks `workdir` (created already) for this process's lifetime; process 0 only.

  Raises:
    InUse (a cli.ConfigError): another live run holds it (one line: who, since when,
      the file).
  """
  if process_index != 0 or workdir in _held:
    return
  if fs.is_url(workdir):
    _acquire_url(workdir)
  else:
    _acquire_local(workdir)


def release(workdir: str) -> None:
  """Drops the lock and removes the informative file (at exit, or for tests)."""
  held = _held.pop(workdir, None)
  if held is None:
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fs.remove(path)
  except Exception:  # pylint: disable=broad-except
    pass  # already gone: nothing to tell
  if isinstance(held, int):
    os.close(held)  # closing the descriptor drops the flock


@atexit.register
def _release_all() -> None:
  for workdir in list(_held):
    release(workdir)
