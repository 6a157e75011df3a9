"""The project's layers depend one way: data_pipelines on nothing in vivit_adapter, and no
module imports itself back through others (function-level imports count too)."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('data_pipelines', 'vivit_adapter')


def _modules():
  """{dotted module name: file path} of every module of the project's packages."""
  found = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(root, name)
          dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
          found[dotted.removesuffix('.__init__')] = path
  return found


def _imports(path, modules):
  """The project modules a file imports anywhere in it (`from pkg import mod` -> pkg.mod)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        sub = f'{node.module}.{alias.name}'
        names.add(sub if sub in modules else node.module)
  return {n for n in names if n in modules}


def _graph():
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def test_data_pipelines_imports_nothing_from_vivit_adapter():
  bad = {m: sorted(deps) for m, deps in _graph().items()
         if m.startswith('data_pipelines') and any(d.startswith('vivit_adapter') for d in deps)}
  assert not bad


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state = {}
  def visit(node, stack):
    state[node] = 'open'
    for dep in sorted(graph[node]):
      if state.get(dep) == 'open':
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        found = visit(dep, stack + [dep])
        if found:
          return found
    state[node] = 'done'
    return None
  for node in sorted(graph):
    if node not in state:
      found = visit(node, [node])
      if found:
        return found
  return None


def test_no_import_cycles():
  # A package's __init__ importing its own submodules is not a cycle.
  graph = {m: {d for d in deps if not m.startswith(d + '.')} for m, deps in _graph().items()}
  assert _cycle(graph) is None


def test_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_importing_the_input_pipeline_leaves_tensorflows_devices_alone():
  """Hiding GPUs from TensorFlow is tf_runtime.configure()'s job, never an import's."""
  code = (
      'import tensorflow as tf\n'
      'calls = []\n'
      'tf.config.set_visible_devices = lambda *a, **k: calls.append(a)\n'
      'import data_pipelines, data_pipelines.reader, data_pipelines.tfds_reader\n'
      'import data_pipelines.benchmark, data_pipelines.validate\n'
      'assert not calls, calls\n'
      'from data_pipelines import tf_runtime\n'
      'tf_runtime.configure()\n'
      'assert calls == [([], "GPU")], calls\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
