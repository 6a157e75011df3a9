r"""Compiled memory, step time and frame-count search of the trainer's own train step.

  python -m vivit_adapter.benchmark --variants=B/16x2 --resolution=224 \
      --frames=8,16,32,64,128 --batch=8 \
      --modes=baseline,baseline+remat,stage2,stage2+chunked \
      [--time --steps=5 --warmup=2] [--fit_budget_gib=16] --out=docs/results/NAME

Modes (docs/design.md §1-§2): `baseline` trains the factorised encoder end to end;
`baseline+remat` adds per-block rematerialisation; `stage2` freezes the tubelet
embedding and spatial encoder and trains the attention adapter + temporal encoder +
head; `stage2+chunked` also runs the frozen spatial pass `--chunk_size` temporal
indices at a time; `stage2+cached` trains from cached frozen features (and, timed, prices
the extraction per clip-view). `--trainable_spatial_layers=0,1,2` measures every stage2
mode at each point of the spatial dial (k top spatial layers trained; a cached step reads
the tokens below them), beside the baseline in the same run.

For every variant x mode x frame count the step is lowered and compiled with an
abstract state (nothing is allocated), and its `memory_analysis()` is reported per
device: temp, arguments, outputs and total = temp + arguments + outputs - aliased.
`--time` also runs it for real, where its compiled total fits this machine's memory.
`--fit_budget_gib` searches the largest frame count per variant and mode whose total
fits the budget, compile only, so a CPU machine can size a GPU/TPU run.

Writes OUT.json (every figure), OUT.md (tables), OUT_memory.png and, when timed,
OUT_step_time.png (all modes on one figure).
"""

from __future__ import annotations  # annotations name step_cases types: not loaded at def

import ast
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import tqdm

from data_pipelines import cli
from vivit_adapter.benchmarks import step_report

# JAX and the step code load on first use: --help answers without them.
jax = cli.lazy_module('jax')
frame_search = cli.lazy_module('vivit_adapter.benchmarks.frame_search')
step_cases = cli.lazy_module('vivit_adapter.benchmarks.step_cases')


def parse_frames(values: List[str]) -> List[int]:
  try:
    frames = [int(v) for v in values]
  except ValueError:
    raise ValueError(f'--frames={",".join(values)}: expected integers, e.g. 8,16,32.') from None
  if not frames:
    raise ValueError('--frames is empty: give at least one frame count.')
  return frames


def parse_overrides(values: List[str]) -> Tuple[Tuple[str, object], ...]:
  """['a.b=2', 'c=x'] -> (('a.b', 2), ('c', 'x')); values are Python literals or strings."""
  pairs = []
  for item in values:
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--model_overrides: {item!r} is not KEY=VALUE, e.g. '
                       'spatial_transformer.num_layers=2.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    pairs.append((key, value))
  return tuple(pairs)


def make_cases(variants: List[str], modes: List[str], frames: List[int], batch: int,
               resolution: int, num_classes: int, chunk_size: int,
               overrides=(), adapters: Sequence[str] = (),
               dials: Sequence[int] = ()) -> List[step_cases.Case]:
  """Every variant x mode x frame count, checked before anything compiles; with
  `adapters`, every stage-2 mode once per adapter type (after the overrides, so it wins),
  and with `dials`, once per number of trainable spatial layers (the dial, k)."""
  if not variants or not modes:
    raise ValueError('--variants and --modes must each name at least one value.')
  unknown = [a for a in adapters if a not in step_cases.ADAPTER_TYPES]
  if unknown:
    raise ValueError(f'--adapters: unknown adapter type(s) {unknown}; expected some of '
                     f'{list(step_cases.ADAPTER_TYPES)}.')

  def per_adapter(mode):
    if not mode.startswith('stage2'):
      return [overrides]
    kinds = [(('adapter.type', a),) for a in adapters] or [()]
    ks = [(('trainable_spatial_layers', k),) for k in dials] or [()]
    return [(*overrides, *a, *k) for a in kinds for k in ks]
  cases = [step_cases.Case(v, m, f, batch, resolution, num_classes, chunk_size, o)
           for v in variants for m in modes for o in per_adapter(m) for f in frames]
  for case in cases:
    step_cases.check_case(case)
  if overrides or dials:  # names an undeclared key or an impossible dial now
    for case in {c.model_overrides: c for c in cases}.values():
      step_cases.case_config(case)
  return cases


def device_memory_gib(device=None) -> float:
  """What one device can hold: a GPU's/TPU's own memory (`memory_stats()`), else this
  machine's physical memory (the CPU backend reports no limit)."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and stats.get('bytes_limit'):
    return stats['bytes_limit'] / step_report.GIB
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / step_report.GIB


def run_case(case: step_cases.Case, time_steps: int, warmup: int,
             time_max_gib: float, cache: Dict) -> Dict:
  """One row of the report: compile-only figures, plus timing when asked and it fits.

  The figures also go into `cache` (case -> figures), which the frame search reuses.
  """
  built = step_cases.build(case)
  compiled, figures = step_cases.compile_built(built)
  cache[case] = figures
  row = {'variant': case.variant, 'mode': case.mode, 'frames': case.frames,
         'batch': case.batch, 'resolution': case.resolution, 'chunk_size': case.chunk_size,
         'adapter': built.config.model.adapter.type,
         'trainable_spatial_layers': built.config.model.trainable_spatial_layers,
         'model_overrides': dict(case.model_overrides), **figures, 'timing': None}
  if time_steps:
    needed = row['memory']['total'] / step_report.GIB
    if needed > time_max_gib:
      row['timing'] = {'skipped': f'needs {needed:.1f} GiB > {time_max_gib:.1f}'}
    else:
      row['timing'] = step_cases.time_case(case, built, compiled, time_steps, warmup)
      if case.mode == 'stage2+cached':  # what the cache cost to make, per stored view
        row['timing'].update(step_cases.time_extraction(case, built, time_steps, warmup))
  return row


def _search_key(case: step_cases.Case):
  """One frame search per variant, mode and overrides (--adapters adds the adapter type)."""
  return case.variant, case.mode, case.model_overrides


def run_search(cases: List[step_cases.Case], budget_gib: float, max_frames: int,
               progress, cache: Dict) -> List[Dict]:
  """The frame search for each distinct (variant, mode) of `cases`."""
  results, seen = [], set()
  for case in cases:
    if _search_key(case) in seen:
      continue
    seen.add(_search_key(case))
    progress.set_description(f'search {case.variant} {case.mode}')
    found = frame_search.search_case(case, int(budget_gib * step_report.GIB), max_frames,
                                      cache)
    results.append({'variant': case.variant, 'mode': case.mode, 'batch': case.batch,
                    'resolution': case.resolution, **found})
    progress.update(1)
  return results


def _meta() -> Dict:
  device = jax.devices()[0]
  # sys.argv, not main's argv: absl removes the parsed flags from the latter.
  return {'command': ' '.join(['python -m vivit_adapter.benchmark'] + sys.argv[1:]),
          'jax_version': jax.__version__, 'backend': jax.default_backend(),
          'device': getattr(device, 'device_kind', str(device)),
          'cpu_count': os.cpu_count(), 'load_average': [round(x, 2) for x in os.getloadavg()],
          'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'resolution': FLAGS.resolution,
          'batch': FLAGS.batch, 'optimizer': 'momentum (base_config default)'}


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_list('variants', ['B/16x2'], 'Model sizes, e.g. B/16x2,L/16x2.')
  flags.DEFINE_integer('resolution', 224, 'Frame height and width, pixels.')
  flags.DEFINE_list('frames', ['8', '16', '32', '64', '128'], 'Frames per clip.')
  flags.DEFINE_integer('batch', 8, 'Clips per device per step.')
  flags.DEFINE_list('modes', [], 'Training modes (see above); default: all of them.')
  flags.DEFINE_integer('num_classes', 400, 'Head width (Kinetics-400).')
  flags.DEFINE_integer(
      'chunk_size', 4, "Temporal indices per chunk of the frozen spatial pass ('stage2+chunked').")
  flags.DEFINE_bool('time', False, 'Also run each case and time its step.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per case (median reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps before the timed ones.')
  flags.DEFINE_float(
      'time_max_gib', 0.0, 'Time only cases whose compiled total is below this; '
      '0 -> 80% of the device\'s memory (a GPU\'s own; on CPU, physical memory).')
  flags.DEFINE_float(
      'fit_budget_gib', 0.0, 'Search the largest frame count whose compiled total fits '
      'this many GiB per device (0: no search).')
  flags.DEFINE_integer(
      'search_max_frames', 4096, 'The frame search stops at this count.')
  flags.DEFINE_list(
      'model_overrides', [], 'config.model keys set after the variant and the mode, so '
      'they win, e.g. spatial_transformer.num_layers=2 or adapter.type=mlp (adapter.* '
      'keys apply to the stage2 modes only; the baseline has no adapter).')
  flags.DEFINE_list(
      'adapters', [], 'Adapter types each stage2 mode is measured with, one case each '
      '(attention, mlp, none); default: the mode\'s own (attention) or adapter.type in '
      '--model_overrides.')
  flags.DEFINE_list(
      'trainable_spatial_layers', [], 'The spatial dial: each stage2 mode is measured '
      'once per k in this list (e.g. 0,1,2), the top k spatial layers trained, a cached '
      'step reading the tokens below them (docs/design.md §2d).')
  flags.DEFINE_string('out', None, 'Output path prefix: OUT.json, OUT.md, OUT_*.png.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.out:
    raise app.UsageError('--out is required, e.g. --out=docs/results/b16_memory.')
  if FLAGS.fit_budget_gib < 0:
    raise app.UsageError(f'--fit_budget_gib={FLAGS.fit_budget_gib} must be >= 0.')
  try:
    cases = make_cases(FLAGS.variants, FLAGS.modes or list(step_cases.MODES),
                       parse_frames(FLAGS.frames),
                       FLAGS.batch, FLAGS.resolution, FLAGS.num_classes,
                       FLAGS.chunk_size, parse_overrides(FLAGS.model_overrides),
                       FLAGS.adapters, [int(k) for k in FLAGS.trainable_spatial_layers])
    if FLAGS.time and (FLAGS.steps <= 0 or FLAGS.warmup < 0):
      raise ValueError(f'--steps={FLAGS.steps} must be positive and --warmup='
                       f'{FLAGS.warmup} >= 0.')
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  searches = len({_search_key(c) for c in cases}) if FLAGS.fit_budget_gib else 0
  time_max = FLAGS.time_max_gib or 0.8 * device_memory_gib()
  result = {'meta': _meta(), 'cases': [], 'search': []}
  cache = {}
  with tqdm.tqdm(total=len(cases) + searches, unit='case', file=sys.stderr) as progress:
    for case in cases:
      progress.set_description(f'{case.variant} {case.mode} {case.frames}f')
      result['cases'].append(run_case(case, FLAGS.steps if FLAGS.time else 0,
                                      FLAGS.warmup, time_max, cache))
      step_report.write_tables(result, FLAGS.out)
      progress.update(1)
    if searches:
      result['search'] = run_search(cases, FLAGS.fit_budget_gib,
                                    FLAGS.search_max_frames, progress, cache)
  paths = step_report.write(result, FLAGS.out)
  print(step_report.markdown(result))
  print('Wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
