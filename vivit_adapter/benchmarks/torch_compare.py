r"""Times one end-to-end train step of the same ViViT-FE in JAX and in plain PyTorch.

  python -m vivit_adapter.benchmarks.torch_compare --variant=S/16x2 --frames=32 \
      --resolution=112 --batch=1 [--steps=5] [--warmup=2] [--threads=N] [--torch_compile]
      [--dtype=float32|bfloat16] [--runners=trainer,jax,torch] [--rounds=N]

The benchmark issue's target: our end-to-end train step must not be slower than a
straightforward PyTorch implementation of the same factorised encoder on the same CPU.
Both frameworks get the same model (the Flax init, copied into `TorchViViTFE`), the
same batches (a new one each step) and the same update (cross-entropy, SGD with
momentum), so their losses follow the same trajectory; the report shows the largest
loss difference as evidence that both did the same work. A third runner, `jax (trainer
step)`, is the step `python -m vivit_adapter.main` runs (`assembly.build`: clipping, schedule,
metrics on top), on the same
initial parameters and batches: the target is about that one, the minimal `jax` step
shows how much of the time is the trainer's extras.

Fairness: both run in this one process, on the same CPUs. `--threads=N` restricts the
process to N CPUs (affinity, which XLA's thread pool sizes itself by) and sets
`torch.set_num_threads(N)`; by default each framework keeps its default (XLA: one thread
per schedulable CPU; torch: one per physical core; the report prints both). Each
framework's warm-up steps (compilation) run on their own; the timed steps are
interleaved (JAX, torch, JAX, ...) so a noisy neighbour slows both alike, and the median
is reported.

`--dtype=bfloat16` times our `config.model.dtype='bfloat16'` step against torch under
`torch.autocast(bfloat16)`. `--rounds=N` (N > 1) runs each runner in a process of its
own and alternates the processes N times (for ViViT-B: two activation sets in one
process compete for memory); see `alternate_processes`.

On a machine shared with other jobs, run with `OMP_WAIT_POLICY=PASSIVE` in the
environment (read when torch loads OpenMP, so it cannot be set from here) or with
`--threads=1`. With the CPUs oversubscribed, torch's OpenMP threads by default spin-wait
at the barrier after every op, taking CPU time from the peer they wait for: we saw
torch's eager step take 4x as long at 2 threads as with PASSIVE, which measured the load
rather than the frameworks. The result records the policy in `omp_wait_policy`.
"""

import copy
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Sequence

from absl import app
from absl import flags
import numpy as np

from data_pipelines import cli
from vivit_adapter import configs

# Loaded on first use, so that --help answers without JAX or torch (data_pipelines.cli).
jax = cli.lazy_module('jax')
optax = cli.lazy_module('optax')
torch = cli.lazy_module('torch')
models = cli.lazy_module('vivit_adapter.models')
step_cases = cli.lazy_module('vivit_adapter.benchmarks.step_cases')
torch_reference = cli.lazy_module('vivit_adapter.benchmarks.torch_reference')
assembly = cli.lazy_module('vivit_adapter.train_lib.assembly')


LEARNING_RATE = 0.01
MOMENTUM = 0.9
# The batches are uint8 pixels, as the trainer's input pipelines yield them; each step
# normalises them (JAX: inside the model, models/inputs.py; torch: in its step).
NORMALIZATION = configs.base_config().dataset.normalization


def limit_cpus(threads: int) -> int:
  """Pins this process to `threads` CPUs (0: all it may use); returns the CPU count.

  Must run before JAX creates its CPU client (its first computation, not its import):
  XLA sizes its thread pool by the affinity mask at that moment.
  """
  cpus = sorted(os.sched_getaffinity(0))
  if threads < 0 or threads > len(cpus):
    raise ValueError(f'--threads={threads}: this process may use {len(cpus)} CPUs.')
  if threads:
    cpus = cpus[:threads]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
  return len(cpus)


def cpu_info() -> Dict[str, object]:
  """The CPU's model name and its vector/matrix ISA flags (Linux /proc/cpuinfo): which
  kernels oneDNN and XLA can use, the first thing a ratio between frameworks depends on."""
  model, isa = '', []
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name') and not model:
          model = line.split(':', 1)[1].strip()
        if line.startswith('flags') and not isa:
          isa = sorted(w for w in line.split(':', 1)[1].split()
                       if w.startswith(('avx', 'amx', 'fma')))
  except OSError:
    pass
  return {'cpu_model': model, 'cpu_isa': isa}


def build_models(model_config, num_classes: int, input_shape, seed: int = 0):
  """The Flax model, its initial params and a `TorchViViTFE` holding the same values."""
  flax_model = models.create_model(model_config, num_classes, NORMALIZATION)
  video = jax.numpy.zeros((1,) + tuple(input_shape) + (3,), np.uint8)
  params = jax.jit(flax_model.init)(jax.random.PRNGKey(seed), video)['params']
  float32_config = copy.deepcopy(model_config)
  float32_config.dtype = 'float32'  # torch keeps float32 parameters; autocast is its bfloat16
  torch_model = torch_reference.from_model_config(float32_config, num_classes, input_shape)
  torch_reference.load_flax_params(torch_model, params)
  return flax_model, params, torch_model


def make_jax_step(model, params, learning_rate: float, momentum: float):
  """A minimal jitted train step; returns (state, step).

  `step(state, video, labels) -> (state, loss)`: cross-entropy, gradients of every parameter, optax SGD with momentum; the state is
  donated so XLA updates it in place, as a real trainer does. Kept in one function so
  it can be swapped for the trainer's own step.
  """
  tx = optax.sgd(learning_rate, momentum)

  def step(state, video, labels):
    params, opt_state = state
    def loss_fn(p):
      logits = model.apply({'params': p}, video, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return (params, tx.init(params)), jax.jit(step, donate_argnums=(0,))


def make_trainer_step(model, params, num_classes: int):
  """The trainer's own end-to-end step on `params`; returns (state, jitted step).

  `assembly.build` from the base config (momentum SGD, global-norm clipping, warm-up +
  cosine schedule, top-1 metric), jitted with the state donated, as the trainer builds
  it. Its update differs from torch's plain SGD (clipping, the schedule), so its losses
  are not compared; it does at least the work of the minimal step.
  """
  config = configs.base_config()
  parts = assembly.build(config, model, params, num_classes=num_classes,
                         steps_per_epoch=step_cases.SCHEDULE_STEPS_PER_EPOCH,
                         total_steps=step_cases.SCHEDULE_TOTAL_STEPS)
  return parts.init_state(params, jax.random.PRNGKey(0)), parts.jit_step()


def make_torch_step(model, learning_rate: float, momentum: float,
                    bfloat16: bool = False) -> Callable:
  """step(pixels, labels) -> loss: normalisation, forward, backward, SGD-momentum
  update, zero_grad. `bfloat16`: the forward pass and loss under `torch.autocast` (what
  a PyTorch user does for bfloat16 on a CPU; the parameters stay float32, as ours do
  with `config.model.dtype='bfloat16'`)."""
  # torch's SGD with dampening 0 is optax.sgd's momentum: buf = m * buf + g; p -= lr * buf.
  optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
  scale, offset = (torch.from_numpy(a) for a in models.inputs.pixel_affine(NORMALIZATION))
  model.train()

  def step(pixels, labels):
    video = pixels.float() * scale + offset
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bfloat16):
      loss = torch.nn.functional.cross_entropy(model(video).float(), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  return step


def _jax_runner(model, params, batches) -> Callable[[], float]:
  state, step = make_jax_step(model, params, LEARNING_RATE, MOMENTUM)
  batches = itertools.cycle([(jax.numpy.asarray(v), jax.numpy.asarray(y)) for v, y in batches])
  holder = {'state': state}

  def run():
    video, labels = next(batches)
    holder['state'], loss = step(holder['state'], video, labels)
    jax.block_until_ready(holder['state'])
    return float(loss)

  return run


def _trainer_runner(model, params, batches, num_classes: int) -> Callable[[], float]:
  state, step = make_trainer_step(model, params, num_classes)
  batches = itertools.cycle([{'inputs': jax.numpy.asarray(v),
                              'label': jax.numpy.asarray(y, np.int32)} for v, y in batches])
  holder = {'state': state}

  def run():
    holder['state'], metrics = step(holder['state'], next(batches))
    jax.block_until_ready(holder['state'])
    return float(metrics['loss'])

  return run


def _torch_runner(model, batches, bfloat16: bool = False) -> Callable[[], float]:
  step = make_torch_step(model, LEARNING_RATE, MOMENTUM, bfloat16)
  batches = itertools.cycle([(torch.from_numpy(v), torch.from_numpy(y))
                             for v, y in batches])
  return lambda: step(*next(batches))


def _random_batches(count: int, batch: int, input_shape, num_classes: int, seed: int):
  """`count` distinct (uint8 video, labels) batches, so training does not collapse onto one.

  (On one repeated batch the loss reaches 0 within a few steps, and the vanishing
  gradients then time denormal arithmetic rather than the model.)
  """
  rng = np.random.default_rng(seed)
  return [(rng.integers(0, 256, (batch,) + tuple(input_shape) + (3,), dtype=np.uint8),
           rng.integers(0, num_classes, (batch,))) for _ in range(count)]


def time_interleaved(runners: Dict[str, Callable[[], float]], warmup: int,
                     steps: int) -> Dict[str, Dict[str, object]]:
  """Runs each runner `warmup` times in turn, then all `steps` times round-robin.

  The warm-up (compilation) of one runner is thus not timed against another's steps,
  while the timed steps are interleaved so that load from other processes on the
  machine hits every runner alike. A runner that raises (e.g. torch.compile without a
  working compiler) is dropped and its error recorded under 'error'.
  """
  out = {name: {'warmup_s': [], 'step_s': [], 'losses': []} for name in runners}
  live = dict(runners)

  def run_once(name, key):
    start = time.perf_counter()
    try:
      loss = live[name]()
    except Exception as e:  # pylint: disable=broad-except
      out[name]['error'] = f'{type(e).__name__}: {str(e)[:300]}'
      del live[name]
      return
    out[name][key].append(time.perf_counter() - start)
    out[name]['losses'].append(loss)

  for name in runners:
    for _ in range(warmup):
      if name in live:
        run_once(name, 'warmup_s')
  for _ in range(steps):
    for name in list(live):
      run_once(name, 'step_s')
  return out


RUNNERS = ('trainer', 'jax', 'torch')  # --runners: 'jax (trainer step)', 'jax', 'torch'


def compare(model_config, num_classes: int, frames: int, resolution: int, batch: int,
            steps: int, warmup: int, torch_compile: bool = False, seed: int = 0,
            runners: Sequence[str] = RUNNERS, dtype: str = 'float32') -> Dict[str, object]:
  """Builds the same model in both frameworks and times their train steps.

  `runners` picks which steps run in this process (all by default). Large models are
  better timed one runner per process: side by side, their activation sets compete
  for memory and the page faults of fresh buffers time the machine, not the framework.

  `dtype='bfloat16'`: the JAX steps run the model with `dtype=bfloat16` (activations
  and matmuls; parameters, softmax statistics and the loss float32), torch under
  `torch.autocast(bfloat16)`; their losses then agree only to bfloat16's precision.

  Returns a JSON-able dict: median/min ms per step, first-step seconds (compilation
  included), the JAX/torch ratios and the largest loss difference over the steps.
  """
  if dtype not in ('float32', 'bfloat16'):
    raise ValueError(f'--dtype={dtype}: choose float32 or bfloat16.')
  if steps < 1 or warmup < 0:
    raise ValueError(f'steps={steps} must be >= 1 and warmup={warmup} >= 0.')
  unknown = sorted(set(runners) - set(RUNNERS))
  if unknown or not runners:
    raise ValueError(f'--runners={",".join(runners)}: choose some of {RUNNERS}.')
  input_shape = (frames, resolution, resolution)
  jax_config = copy.deepcopy(model_config)
  jax_config.dtype = dtype
  flax_model, params, torch_model = build_models(jax_config, num_classes, input_shape, seed)
  batches = _random_batches(warmup + steps, batch, input_shape, num_classes, seed)
  timed = {}
  if 'trainer' in runners:  # its own copy of the initial parameters (each runner donates)
    timed['jax (trainer step)'] = _trainer_runner(
        flax_model, jax.tree.map(jax.numpy.copy, params), batches, num_classes)
  if 'jax' in runners:
    timed['jax'] = _jax_runner(flax_model, params, batches)
  if torch_compile:
    # A copy taken before any step, so it follows the same loss trajectory.
    timed['torch.compile'] = _torch_runner(torch.compile(copy.deepcopy(torch_model)),
                                           batches, dtype == 'bfloat16')
  if 'torch' in runners:
    timed['torch'] = _torch_runner(torch_model, batches, dtype == 'bfloat16')
  del params  # donated to the JAX step
  timings = time_interleaved(timed, warmup, steps)
  return _summarise(timings, {
      'variant': model_config.variant, 'dtype': dtype, 'frames': frames, 'resolution': resolution, 'batch': batch,
      'num_classes': num_classes, 'steps': steps, 'warmup': warmup,
      'cpus': len(os.sched_getaffinity(0)), 'torch_num_threads': torch.get_num_threads(),
      'jax_version': jax.__version__, 'torch_version': torch.__version__,
      'jax_device': str(jax.devices()[0]),
      'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', ''),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), **cpu_info(),
      'torch_cpu_capability': torch.backends.cpu.get_cpu_capability()})


def _summarise(timings, info) -> Dict[str, object]:
  result = dict(info)
  result['frameworks'] = {}
  for name, t in timings.items():
    entry = {'error': t['error']} if 'error' in t else {}
    if t['step_s']:
      entry.update(ms_per_step=1e3 * statistics.median(t['step_s']),
                   ms_min=1e3 * min(t['step_s']), ms_max=1e3 * max(t['step_s']),
                   step_s=list(t['step_s']))
    if t['warmup_s']:
      entry['first_step_s'] = t['warmup_s'][0]
    entry['losses'] = t['losses']
    result['frameworks'][name] = entry
  fw = result['frameworks']
  if 'ms_per_step' in fw.get('torch', {}) and 'ms_per_step' in fw.get('jax (trainer step)', {}):
    result['ratio_trainer_step_over_torch'] = (fw['jax (trainer step)']['ms_per_step'] /
                                               fw['torch']['ms_per_step'])
  for other in ('torch', 'torch.compile'):
    if 'ms_per_step' in fw.get(other, {}) and 'ms_per_step' in fw.get('jax', {}):
      result[f'ratio_jax_over_{other}'] = fw['jax']['ms_per_step'] / fw[other]['ms_per_step']
      n = min(len(fw['jax']['losses']), len(fw[other]['losses']))
      result[f'max_loss_diff_{other}'] = float(np.max(np.abs(
          np.subtract(fw['jax']['losses'][:n], fw[other]['losses'][:n]))))
  return result


def alternate_processes(argv: Sequence[str], runners: Sequence[str], rounds: int,
                        info: Dict[str, object]) -> Dict[str, object]:
  """Runs each runner in a process of its own, alternating (A, B, A, B, ...) `rounds`
  times; returns one result over all their timed steps.

  For large models: a process per runner keeps their activation sets from competing for
  memory, and alternating the processes spreads slow and fast periods of a shared
  machine over every runner, as interleaved steps do within one process. `argv` is this
  program's flags without --runners, --rounds and --out.
  """
  timings, children = {}, []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(rounds):
      for runner in runners:
        out = os.path.join(tmp, f'{r}_{runner}')
        subprocess.run([sys.executable, '-m', 'vivit_adapter.benchmarks.torch_compare',
                        *argv, f'--runners={runner}', '--rounds=1', f'--out={out}'],
                       check=True, stdout=subprocess.DEVNULL)
        with open(out + '.json') as f:
          child = json.load(f)
        children.append(child)
        for name, e in child['frameworks'].items():
          t = timings.setdefault(name, {'step_s': [], 'warmup_s': [], 'losses': []})
          if 'error' in e:
            t['error'] = e['error']
          t['step_s'] += e.get('step_s', [])
          t['losses'] = t['losses'] or e['losses']  # every round starts alike
          if 'first_step_s' in e:
            t['warmup_s'].append(e['first_step_s'])
  first = {k: v for k, v in children[0].items()
           if k not in ('frameworks', 'command', 'load_average') and not k.startswith(
               ('ratio', 'max_loss'))}
  result = _summarise(timings, dict(first, **info))
  result['round_ms'] = {name: [1e3 * statistics.median(c['frameworks'][name]['step_s'])
                               for c in children if name in c['frameworks']
                               and c['frameworks'][name].get('step_s')]
                        for name in timings}
  return result


def format_table(result: Dict[str, object]) -> str:
  """A markdown table: one row per framework."""
  rows = ['| framework | ms/step (median) | min | max | first step (s, incl. compile) |',
          '|---|---|---|---|---|']
  for name, e in result['frameworks'].items():
    if 'ms_per_step' not in e:
      rows.append(f'| {name} | failed: {e.get("error", "no timed step")} | | | |')
      continue
    rows.append(f'| {name} | {e["ms_per_step"]:.1f} | {e["ms_min"]:.1f} | '
                f'{e["ms_max"]:.1f} | {e.get("first_step_s", float("nan")):.1f} |')
  return '\n'.join(rows)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this program's flags; only when it runs as a program, so that importing
  the module (tests, other tools) never collides with another program's flags."""
  flags.DEFINE_string('variant', 'S/16x2', 'Model size, e.g. S/16x2, B/16x2.')
  flags.DEFINE_integer('frames', 32, 'Frames per clip.')
  flags.DEFINE_integer('resolution', 112, 'Frame height and width.')
  flags.DEFINE_integer('batch', 1, 'Clips per step.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per framework (median reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps first (compilation, caches).')
  flags.DEFINE_integer(
      'threads', 0, 'CPUs for both frameworks; 0 keeps the defaults (all CPUs).')
  flags.DEFINE_integer('num_classes', 400, 'Head width (Kinetics-400).')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'float32, or bfloat16: '
                    "config.model.dtype='bfloat16' against torch.autocast(bfloat16).")
  flags.DEFINE_bool(
      'torch_compile', False, 'Also time torch.compile(model) (needs a C++ compiler).')
  flags.DEFINE_list('runners', list(RUNNERS), 'Steps to time in this process: some of '
                    f'{RUNNERS} (one per process for large models; see compare()).')
  flags.DEFINE_integer('rounds', 1, '> 1: each runner in a process of its own, the '
                       'processes alternated (A, B, A, B, ...) this many times; the '
                       'median is over every timed step of every round.')
  flags.DEFINE_string('out', '', 'Also write OUT.json and OUT.md (e.g. '
                      'docs/results/torch_s16x2_112).')


def _interleaving(result: Dict[str, object]) -> str:
  rounds = result.get('rounds', 1)
  if rounds == 1:
    return 'interleaved in one process'
  per_round = '; '.join(f'{name} ' + ', '.join(f'{ms:.0f}' for ms in ms_list)
                        for name, ms_list in result.get('round_ms', {}).items())
  return (f'each runner in its own process, the processes alternated {rounds} times '
          f'(the median is over all their steps; per round, ms: {per_round})')


def report_markdown(result: Dict[str, object], command: str) -> str:
  """The header line, the table and the ratios, as printed and as written to OUT.md."""
  r = result
  lines = [f'Command: `{command}`', '',
           f'ViViT-{r["variant"]}, {r["frames"]} frames, {r["resolution"]}px, batch '
           f'{r["batch"]}, {r.get("dtype", "float32")}: end-to-end train step on '
           f'{r["cpus"]} CPUs of {r.get("cpu_model") or "an unnamed CPU"} '
           f'({" ".join(r.get("cpu_isa", [])) or "ISA flags not read"}; torch capability '
           f'{r.get("torch_cpu_capability", "?")}) (torch threads '
           f'{r["torch_num_threads"]}, OMP_WAIT_POLICY={r["omp_wait_policy"] or "unset"}, '
           f'XLA_FLAGS={r["xla_flags"] or "unset"}; JAX {r["jax_version"]}, torch '
           f'{r["torch_version"]}); median of {r["steps"]} steps after {r["warmup"]} '
           f'warm-up, {_interleaving(r)}; load average at the end '
           f'{r.get("load_average", "?")}.',
           '', format_table(r), '']
  if 'ratio_trainer_step_over_torch' in r:
    lines.append(f'* jax trainer step / torch = {r["ratio_trainer_step_over_torch"]:.3f}')
  for other in ('torch', 'torch.compile'):
    if f'ratio_jax_over_{other}' in r:
      lines.append(f'* jax / {other} = {r[f"ratio_jax_over_{other}"]:.3f} (max loss '
                   f'difference {r[f"max_loss_diff_{other}"]:.2e})')
  return '\n'.join(lines) + '\n'


def write_outputs(out: str, result: Dict[str, object], text: str, command: str) -> None:
  """OUT.json (the result and its command) and OUT.md (the report); shared by the
  benchmarks' comparison programs."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.json', 'w') as f:
    json.dump(dict(result, command=command), f, indent=1)
  with open(out + '.md', 'w') as f:
    f.write(text)
  print(f'Wrote {out}.json and {out}.md')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.rounds < 1:
    raise app.UsageError(f'--rounds={FLAGS.rounds} must be >= 1.')
  if FLAGS.rounds > 1:
    child_argv = [a for a in sys.argv[1:]
                  if not a.startswith(('--runners', '--rounds', '--out'))]
    result = alternate_processes(child_argv, FLAGS.runners, FLAGS.rounds,
                                 {'rounds': FLAGS.rounds})
  else:
    limit_cpus(FLAGS.threads)  # before JAX's first computation
    model_config = configs.base_config().model
    models.variants.apply_variant(model_config, FLAGS.variant)
    result = compare(model_config, FLAGS.num_classes, FLAGS.frames, FLAGS.resolution,
                     FLAGS.batch, FLAGS.steps, FLAGS.warmup, FLAGS.torch_compile,
                     runners=FLAGS.runners, dtype=FLAGS.dtype)
  result['load_average'] = [round(x, 2) for x in os.getloadavg()]
  command = 'python -m vivit_adapter.benchmarks.torch_compare ' + ' '.join(sys.argv[1:])
  text = report_markdown(result, command)
  print(text)
  print(json.dumps(result))
  if FLAGS.out:
    write_outputs(FLAGS.out, result, text, command)


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
