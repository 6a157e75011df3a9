"""data_pipelines.tf_runtime: TensorFlow comes in through one quiet door.

TensorFlow writes C++ log lines to file descriptor 2 at import on some CPUs only, so the
tests put a stand-in `tensorflow` package (one that writes to fd 2 at import, as the real
one does there) first on the path of a subprocess: they fail on every machine if the
silencing goes, not only on the CPUs where TensorFlow logs.
"""

import ast
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_package(root, name: str, body: str) -> None:
  os.makedirs(os.path.join(root, name))
  with open(os.path.join(root, name, '__init__.py'), 'w') as f:
    f.write(textwrap.dedent(body))


def _run(fake_root, code: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_root), REPO]))
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=60)


_NOISY_TF = """
    import os, sys
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() ...\\n')
    sys.stderr.write('a Python-level warning at import\\n')
    VERSION = 'fake'
"""


def test_import_tensorflow_silences_what_the_import_writes_to_fd_2(tmp_path):
  _fake_package(tmp_path, 'tensorflow', _NOISY_TF)
  _fake_package(tmp_path, 'tensorflow_datasets', """
      import os
      os.write(2, b'tfds noise\\n')
      NAME = 'fake tfds'
  """)
  result = _run(tmp_path, """
      import os
      from data_pipelines import tf_runtime
      tf = tf_runtime.import_tensorflow()
      tfds = tf_runtime.import_tensorflow_datasets()
      print(tf.VERSION, tfds.NAME, tf_runtime.import_tensorflow() is tf)
      os.write(2, b'our own line\\n')  # fd 2 is stderr again afterwards
  """)
  assert result.returncode == 0, result.stderr
  assert result.stdout == 'fake fake tfds True\n'
  assert result.stderr == 'our own line\n'


def test_modules_that_import_tensorflow_at_load_are_quiet(tmp_path):
  # fs is what every program touches first; its TensorFlow comes on first use.
  _fake_package(tmp_path, 'tensorflow', _NOISY_TF + """
    class io:
      class gfile:
        exists = staticmethod(lambda path: 'gfile:' + path)
  """)
  result = _run(tmp_path, """
      from data_pipelines import fs
      print(fs._gfile().exists('x'))
  """)
  assert (result.returncode, result.stdout, result.stderr) == (0, 'gfile:x\n', '')


def test_an_import_error_still_reaches_stderr_with_what_the_import_wrote(tmp_path):
  _fake_package(tmp_path, 'tensorflow', """
      import os
      os.write(2, b'libtensorflow_framework.so.2: cannot open shared object file\\n')
      raise ImportError('broken TensorFlow install')
  """)
  result = _run(tmp_path, """
      import os
      from data_pipelines import tf_runtime
      try:
        tf_runtime.import_tensorflow()
      except ImportError as e:
        os.write(2, f'caught: {e}\\n'.encode())
  """)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ('libtensorflow_framework.so.2: cannot open shared object file\n'
                           'caught: broken TensorFlow install\n')


def _bare_tensorflow_imports(path: str):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names = [node.module or '']
    # clu imports TensorFlow at import: it comes in through tf_runtime.import_library.
    if any(n.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'clu') for n in names):
      yield f'{os.path.relpath(path, REPO)}:{node.lineno}'


def test_every_module_imports_tensorflow_through_tf_runtime():
  found = []
  for package in ('vivit_adapter', 'data_pipelines'):
    for root, _, names in os.walk(os.path.join(REPO, package)):
      for name in names:
        if name.endswith('.py') and name != 'tf_runtime.py':
          found.extend(_bare_tensorflow_imports(os.path.join(root, name)))
  assert not found, f'import TensorFlow with tf_runtime.import_tensorflow(): {found}'


def test_importing_the_trainer_and_the_studies_writes_nothing_to_stderr():
  # clu imports TensorFlow when it is imported: through tf_runtime.import_library it is
  # quiet too. On a CPU whose TensorFlow logs at import (AVX-512/AMX, some AMD EPYC) the
  # studies' runner printed the oneDNN lines twice before any of its own; elsewhere this
  # holds trivially and the scan above stands in for it.
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  proc = subprocess.run(
      [sys.executable, '-c', 'import vivit_adapter.studies.ablation.run, '
       'vivit_adapter.train_lib.trainer, vivit_adapter.extract_features'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr == ''
