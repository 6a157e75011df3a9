r"""Where the time of the trainer's end-to-end step goes, by layer part and direction.

  python -m vivit_adapter.benchmarks.step_profile --variant=B/16x2 --frames=32 \
      --resolution=224 [--steps=1]

Runs the `baseline` step of `step_cases` (the trainer's own step, batch 1) under
`jax.profiler.trace`, reads the per-op events of the trace (one per XLA thunk: a
fusion, a dot, ...) and names each op by the JAX source it came from (the `op_name`
metadata of the compiled HLO): forward or backward (`transpose(jvp(...))`), and the
module (attention q/k/v projections, attention core, MLP dense layers, ...). The
figures are sums of op durations, so they hold their proportions even when the machine
is loaded, but not their absolute values.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
from typing import Dict

from absl import app
from absl import flags

from data_pipelines import cli

# Loaded on first use, so that --help answers without JAX (data_pipelines.cli).
jax = cli.lazy_module('jax')
step_cases = cli.lazy_module('vivit_adapter.benchmarks.step_cases')

# op_name fragment -> part, first match wins (flax's attention names its projections
# query/key/value/out; MlpBlock's dense layers are Dense_0 and Dense_1).
PARTS = (('/query/', 'attention q/k/v projections'), ('/key/', 'attention q/k/v projections'),
         ('/value/', 'attention q/k/v projections'), ('/out/', 'attention output projection'),
         ('MultiHeadDotProductAttention', 'attention core (logits, softmax, weighted sum)'),
         ('Dense_0', 'MLP dense layers'), ('Dense_1', 'MLP dense layers'),
         ('MlpBlock', 'MLP GELU'), ('LayerNorm', 'LayerNorm'), ('embedding', 'tubelet embedding'),
         ('output_projection', 'head'), ('ViViTFactorisedEncoder', 'other model ops'))


def op_names(hlo_text: str) -> Dict[str, str]:
  """HLO instruction name -> its op_name metadata (the JAX source path)."""
  names = {}
  for line in hlo_text.splitlines():
    match = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = ', line)
    if match:
      source = re.search(r'op_name="([^"]*)"', line)
      names[match.group(1)] = source.group(1) if source else ''
  return names


def part_of(op_name: str) -> str:
  """'forward <part>' / 'backward <part>', or 'optimizer and metrics'."""
  part = next((label for key, label in PARTS if key in op_name), None)
  if part is None:
    return 'optimizer and metrics'
  return ('backward ' if 'transpose(' in op_name else 'forward ') + part


def profile_case(case: 'step_cases.Case', steps: int = 1,
                 warmup: int = 2) -> Dict[str, float]:
  """Seconds per step by part (see module docstring), plus 'wall s/step'."""
  built = step_cases.build(case)
  compiled, _ = step_cases.compile_built(built)
  names = op_names(compiled.as_text())
  # pylint: disable=protected-access
  state, batch = step_cases._real_state(built, 0), step_cases._real_batch(case, built, 0)
  # pylint: enable=protected-access
  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as out:
    with jax.profiler.trace(out, create_perfetto_trace=True):
      for _ in range(steps):
        state, _ = compiled(state, batch)
      jax.block_until_ready(state)
    path = glob.glob(os.path.join(out, '**', '*.trace.json.gz'), recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)['traceEvents']
  seconds = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in names:
      seconds[part_of(names[e['name']])] += e['dur'] / 1e6 / steps
  return dict(seconds.most_common())


def format_table(seconds: Dict[str, float]) -> str:
  total = sum(seconds.values())
  rows = ['| part | s/step | share |', '|---|---|---|']
  rows += [f'| {k} | {v:.3f} | {100 * v / total:.1f}% |' for k, v in seconds.items()]
  return '\n'.join(rows)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('variant', 'S/16x2', 'Model size, e.g. B/16x2.')
  flags.DEFINE_integer('frames', 32, 'Frames per clip.')
  flags.DEFINE_integer('resolution', 112, 'Frame height and width.')
  flags.DEFINE_integer('steps', 1, 'Profiled steps (after 2 untimed ones).')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'config.model.dtype.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  case = step_cases.Case(FLAGS.variant, 'baseline', FLAGS.frames, 1, FLAGS.resolution,
                         model_overrides=(('dtype', FLAGS.dtype),))
  step_cases.check_case(case)
  seconds = profile_case(case, FLAGS.steps)
  print('python -m vivit_adapter.benchmarks.step_profile ' + ' '.join(sys.argv[1:]))
  print(f'load average {os.getloadavg()}')
  print(format_table(seconds))


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
