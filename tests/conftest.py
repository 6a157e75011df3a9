"""Test set-up shared by every test file."""

import os

import pytest

# Several CPU devices for sharding tests; must be set before jax is imported. The tests'
# models are tiny, so compiling them costs far more than running them: XLA:CPU's code
# generator runs without LLVM's optimisations (about half the compile time; the HLO, and
# so results, buffer sizes and compiled memory figures, are unaffected). trainer_utils.env
# passes these flags on to the CLI subprocesses.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4 '
                      '--xla_backend_optimization_level=0 '
                      '--xla_llvm_disable_expensive_passes=true')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# One persistent XLA compilation cache for the whole run, shared by the test processes
# (pytest-xdist workers) and the CLI subprocesses they start (they inherit the
# environment): the tiny models' steps are compiled once, not once per run. Cache hits
# return the same executable (memory_analysis included); only compile time changes.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(_REPO, '.cache', 'jax_compilation_tests'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into groups
def pytest_collection_modifyitems(config, items):
  """Under pytest-xdist's `--dist loadgroup` (the Makefile's test command), tests spread
  over the workers one by one, except that a file whose tests share a module- or
  session-scoped fixture of its own (a tiny training run, a dataset) stays on one worker,
  so that fixture is built once."""
  del config  # unused
  for item in items:
    info = getattr(item, '_fixtureinfo', None)
    defs = info.name2fixturedefs.values() if info is not None else [()]
    shared = any(d.scope in ('module', 'package', 'session')
                 and getattr(d.func, '__module__', '').startswith('tests.')
                 for ds in defs for d in ds)
    if shared or info is None:
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
