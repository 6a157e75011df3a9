"""Every user path goes through here: local paths and URLs (gs://...) alike.

The convention: file I/O on a path a user gives (data, label maps, metadata, workdirs,
checkpoints, reports, plots) uses `tf.io.gfile`, which reads and writes local paths
and every scheme TensorFlow has a file system for (gs://, and ram:// in memory, which
the tests use). tf.data reads the same URLs, and orbax reaches gs:// through etils.epath,
which itself uses tf.io.gfile when TensorFlow is installed: one file system layer for
the whole run. Pure string operations (os.path.join, basename, dirname, splitext) are
fine on URLs on POSIX and stay os.path; only `os.path.abspath` is not (it turns
'gs://b/x' into '/cwd/gs:/b/x'): use `abspath` below.
"""

import os
from typing import List, Union

from data_pipelines import tf_runtime


def _gfile():
  # TensorFlow is imported on the first file operation, not with this module: every
  # program imports it, and --help must not wait for TensorFlow.
  tf = tf_runtime.import_tensorflow()
  return tf.io.gfile


def is_url(path: str) -> bool:
  """Whether `path` names a file system by scheme ('gs://b/x', 'ram://x')."""
  return '://' in os.fspath(path)


def abspath(path: str) -> str:
  """A local path made absolute; a URL unchanged (it is absolute already)."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return _gfile().exists(os.fspath(path))


def isdir(path: str) -> bool:
  return _gfile().isdir(os.fspath(path))


def isfile(path: str) -> bool:
  return exists(path) and not isdir(path)


def listdir(path: str) -> List[str]:
  # gfile lists sub-directories of object stores with a trailing '/'; names only.
  return [name.rstrip('/') for name in _gfile().listdir(os.fspath(path))]


def glob(pattern: str) -> List[str]:
  """Sorted matches; `*`, `?` and `[...]` as in Python's glob (`glob.escape` works)."""
  return sorted(_gfile().glob(os.fspath(pattern)))


def size(path: str) -> int:
  """The file's length in bytes."""
  return _gfile().stat(os.fspath(path)).length


def makedirs(path: str) -> None:
  _gfile().makedirs(os.fspath(path))


def open(path: str, mode: str = 'r'):  # pylint: disable=redefined-builtin
  """A file object ('r', 'w', 'a', with 'b' for bytes) on a local path or URL."""
  return _gfile().GFile(os.fspath(path), mode)


def remove(path: str) -> None:
  _gfile().remove(os.fspath(path))


def rename(src: str, dst: str) -> None:
  """Moves `src` onto `dst`, replacing it (atomic on a local file system)."""
  _gfile().rename(os.fspath(src), os.fspath(dst), overwrite=True)


def atomic_write(path: str, data: Union[str, bytes]) -> None:
  """Writes `data` so that readers see the old file or the new one, never half of one.

  Locally: a temporary file renamed into place. On gs:// an object appears only when
  its upload completes, so the object is written directly (a rename there would be a
  copy and a delete, and no more atomic).
  """
  path = os.fspath(path)
  mode = 'wb' if isinstance(data, bytes) else 'w'
  if path.startswith('gs://'):
    with open(path, mode) as f:
      f.write(data)
    return
  tmp = path + '.tmp'
  try:
    with open(tmp, mode) as f:
      f.write(data)
  except BaseException:  # a full disk or a signal: no stray temporary file
    if exists(tmp):
      remove(tmp)
    raise
  rename(tmp, path)
