"""`next()` of an iterator that a signal can interrupt.

A tf.data iterator's `next()` runs in C++: while it is blocked (a slow file system) or
spins (a filter that drops every record), Python signal handlers do not run, so SIGTERM
and SIGINT were held back for as long as it lasted. Here the `next()` runs on a daemon
thread and the caller waits in Python, in short slices, checking `cli.check_stop`.
"""

import threading
from typing import Any, Iterator

from data_pipelines import cli

_POLL_S = 0.25


def next_of(iterator: Iterator, waiting_for: str = 'input data') -> Any:
  """`next(iterator)` (StopIteration included), or cli.Preempted within about _POLL_S of
  a stop signal, leaving the thread that waits on `iterator` behind (a daemon)."""
  out = {}
  done = threading.Event()

  def fetch():
    try:
      out['value'] = next(iterator)
    except BaseException as e:  # pylint: disable=broad-except
      out['error'] = e
    done.set()

  threading.Thread(target=fetch, name='input-fetch', daemon=True).start()
  try:
    while not done.wait(_POLL_S):
      cli.check_stop(waiting_for)
  except BaseException as e:  # a stop (or the program handler's Preempted) mid-wait
    cli.left_a_thread_blocked(str(e))
    raise
  if 'error' in out:
    raise out['error']
  return out['value']
