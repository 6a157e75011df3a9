"""TensorFlow as this project uses it: for input pipelines only, on the host CPU.

JAX owns the accelerators. TensorFlow grabs every GPU it sees (and their memory) the
first time it initialises its devices, so a program that trains with JAX must hide the
accelerators from TensorFlow before anything builds a tf.data pipeline. Every program
calls `configure()` once, at start, explicitly; importing a module never does it.

Every module of this project imports TensorFlow (and TensorFlow Datasets) through
`import_tensorflow()` (`import_tensorflow_datasets()`, and a library that imports it, such
as clu, through `import_library`), never with a bare `import`: on
some CPUs (AVX-512/AMX) TensorFlow's C++ start-up writes lines to file descriptor 2 at
import ("All log messages before absl::InitializeLog() ...", "oneDNN custom operations
are on ...") whatever TF_CPP_MIN_LOG_LEVEL says, and a program's stderr must hold only
its own lines (one line per user error, see data_pipelines.cli).
"""

import importlib
import os
import sys
import tempfile
from types import ModuleType

from absl import logging


def import_tensorflow() -> ModuleType:
  """`tensorflow`, imported with its start-up lines on stderr silenced (see above)."""
  return _import_quietly('tensorflow')


def import_library(name: str) -> ModuleType:
  """Module `name` of a library that imports TensorFlow when it is imported (clu's
  metric_writers and periodic_actions do), with TensorFlow imported quietly first, so
  that no program's stderr depends on which of its modules came first."""
  import_tensorflow()
  return importlib.import_module(name)


def import_tensorflow_datasets() -> ModuleType:
  """`tensorflow_datasets` (which imports TensorFlow), as quietly as `import_tensorflow`."""
  import_tensorflow()
  return _import_quietly('tensorflow_datasets')


def _import_quietly(name: str) -> ModuleType:
  """Imports `name` with file descriptor 2 pointed at a temporary file.

  The redirect is at the descriptor, not sys.stderr: the lines come from C++. What the
  import wrote is dropped when it succeeds, and written to stderr before the error
  propagates when it fails, so that a broken install still explains itself (a signal
  during the import is no failure of it: nothing is replayed). Only the first import
  pays for the redirect; later ones find the module in sys.modules.
  """
  if name in sys.modules:
    return sys.modules[name]
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr at all: nothing to keep quiet
    return importlib.import_module(name)
  failed = False
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      return importlib.import_module(name)
    except Exception:
      failed = True
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if failed:
        captured.seek(0)
        _write_stderr(captured.read())


def _write_stderr(data: bytes) -> None:
  while data:
    data = data[os.write(2, data):]


def configure() -> None:
  """Hides GPUs from TensorFlow (input pipelines run on the host); safe to call twice.

  Must run before TensorFlow initialises its devices (before the first tf.data
  pipeline or tensor op). If that already happened and TensorFlow sees GPUs, it warns.
  """
  tf = import_tensorflow()
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices: too late to hide them
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow initialised its devices before '
                      'data_pipelines.tf_runtime.configure() ran and sees GPUs; call it at '
                      'program start so that TensorFlow leaves them to JAX.')
