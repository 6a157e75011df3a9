"""The training loop: `train_and_evaluate(config, workdir)`.

Set-up is split into `setup_*` functions; the loop itself only steps, logs, evaluates
and checkpoints. Where the run starts from is decided once, in this order: the
workdir's own latest checkpoint (a resumed run), else `config.init_from` (a stage-1
workdir, a scenic checkpoint or an image ViT), else a fresh initialisation.
"""

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

import data_pipelines
from data_pipelines import cli
from data_pipelines import tf_runtime
from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.models import create_model
from vivit_adapter.train_lib import assembly, checkpointing, class_report, compiled_memory
from vivit_adapter.train_lib import data_source
from vivit_adapter.train_lib import evaluation, finite
from vivit_adapter.train_lib import optimizers, parallel, reporting, startup, steps

periodic_actions = tf_runtime.import_library('clu.periodic_actions')


@dataclasses.dataclass
class Setup:
  """Everything the loop needs, resolved before the first step."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  source: Any  # data_source.VideoSource or CachedSource: batches and dataset info
  info: data_pipelines.DatasetInfo
  model: Any
  steps_per_epoch: int
  total_steps: int
  parts: assembly.TrainParts  # frozen names, optimizer, schedule, train step
  state: steps.TrainState
  start: str  # where the parameters came from, for the log and summary
  # Jitted eval/test steps, built on first use. On the Setup rather than in a module
  # cache, so runs in one process (the demo, the ablation) never share or leak them.
  eval_fns: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # The latest class report of each kind ('eval', 'test', 'test_cached'), for confusion.png.
  reports: Dict[str, Any] = dataclasses.field(default_factory=dict)


def setup_lengths(config, info) -> tuple:
  """(steps_per_epoch, total_steps) from the dataset size and the config."""
  steps_per_epoch = max(info.num_train_examples // config.batch_size, 1)
  total = config.num_training_steps or int(config.num_training_epochs * steps_per_epoch)
  return steps_per_epoch, max(total, 1)


def setup_state(config, model, mesh, num_classes, steps_per_epoch, total_steps,
                part: str = models.WHOLE):
  """Fresh parameters (created replicated), the run's TrainParts and its step-0 state.

  `part` is the part of the model the step runs (models.TRAINABLE_PART when training
  from cached features); the state always holds every parameter, frozen ones included,
  so checkpoints are complete models. Returns (state, parts).
  """
  init_rng, state_rng = assembly.run_rngs(config)
  params = assembly.init_params(config, model, init_rng, mesh)
  parts = assembly.build(config, assembly.ModelPart(model, part), params,
                         num_classes=num_classes, steps_per_epoch=steps_per_epoch,
                         total_steps=total_steps)
  return parts.init_state(params, state_rng, mesh), parts


def setup_start(config, manager, state, parts, mesh):
  """Resume, else init_from, else scratch. Returns (state, data_state, description)."""
  restored = checkpointing.restore_latest(manager, state)
  if restored is not None:
    state, meta, step = restored
    data_states = meta.get('data_states') or [None]
    return state, data_states[min(jax.process_index(), len(data_states) - 1)], (
        f'resumed from {manager.directory}/{step}')
  if config.init_from.checkpoint_path:
    params, message = assembly.load_init_from(config, state.params, mesh)
    return parts.init_state(params, state.rng, mesh), None, message
  return state, None, 'initialised from scratch (no checkpoint, config.init_from empty)'


def setup(config, workdir) -> Setup:
  """The run's parts, for a config that passed the start-up check (startup.check)."""
  mesh = parallel.make_mesh()
  source = data_source.make_source(config)
  info = source.info
  model = create_model(config.model, info.num_classes, config.dataset.normalization)
  steps_per_epoch, total_steps = setup_lengths(config, info)
  state, parts = setup_state(config, model, mesh, info.num_classes, steps_per_epoch,
                             total_steps, part=source.part)
  return Setup(config=config, workdir=workdir, mesh=mesh, source=source, info=info,
               model=model,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps, parts=parts,
               state=state, start='')


def _diverged(what: str, manager) -> cli.DivergedError:
  # A save of an earlier (finite) step may still be in flight: finish it before the
  # error ends the process, so the checkpoint named below is complete. Every saved
  # checkpoint passed _check_state_finite, so the latest one is good.
  checkpointing.wait_until_finished(manager)
  last = manager.latest_step()
  where = (f'The last good checkpoint is step {last} in {manager.directory}'
           if last is not None else 'No checkpoint was written yet')
  return cli.DivergedError(
      f'{what}; stopping. {where}. Lower config.lr_configs.base_learning_rate or check '
      'the input data.')


def _check_finite(metrics, step, manager):
  loss = float(jax.device_get(metrics['loss']))
  if not np.isfinite(loss):
    raise _diverged(f'Training loss is {loss} at step {step}', manager)


def _check_state_finite(state, step, manager):
  """The state about to be saved is finite. The loss of a step is computed before its
  update, so a finite loss does not prove the parameters it produced are finite."""
  bad = finite.nonfinite_names({'params': state.params, 'opt_state': state.opt_state})
  if bad:
    raise _diverged(f'The training state after step {step} is not finite '
                    f'({finite.describe(bad)}); it was not saved', manager)


def _mean_metrics(buffer):
  host = jax.device_get(buffer)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def save_checkpoint(s: Setup, manager, state, train_iter):
  data_states = evaluation.gather_json(train_iter.state)
  checkpointing.save(manager, state, {'data_states': data_states,
                                      'experiment_name': s.config.experiment_name})


def train_loop(s: Setup, train_iter, manager, writer, history):
  """Runs the remaining steps; returns (state, timing dict).

  The PreemptionWatcher is on before the first batch is fetched: SIGTERM/SIGINT while
  the input pipeline is blocked ends the wait (cli.Preempted from the fetch, or from an
  evaluation's), and the loop saves what it has instead of waiting for a batch.
  """
  state = s.state
  with checkpointing.PreemptionWatcher() as preemption:
    try:
      first_batch = parallel.to_global(next(train_iter), s.mesh)
    except cli.Preempted:
      if not preemption.requested:
        raise
      return state, {**TrainClock().read(), 'memory': {}, 'preempted': preemption.requested,
                     'saved': False}
    compiled, memory = compiled_memory.compile_and_measure(s.parts.jit_step(s.mesh), state,
                                                           first_batch)
    log_start(s, memory)
    state, clock, saved = _steps(s, state, compiled, first_batch, train_iter, manager,
                                 writer, history, preemption)
  checkpointing.wait_until_finished(manager)
  return state, {**clock.read(), 'memory': memory, 'preempted': preemption.requested,
                 'saved': saved}


def _steps(s: Setup, state, compiled, batch, train_iter, manager, writer, history,
           preemption):
  """The loop proper; returns (state, clock, whether the last step is saved)."""
  config = s.config
  eval_every = config.log_eval_steps or s.steps_per_epoch
  ckpt_every = config.checkpoint_steps or s.steps_per_epoch
  step = int(jax.device_get(state.step))
  saved_step = step  # resumed from (or started at) it: nothing new to save yet
  progress = periodic_actions.ReportProgress(num_train_steps=s.total_steps, writer=writer,
                                             every_steps=config.log_summary_steps)
  bar = tqdm.tqdm(total=s.total_steps, initial=step, desc=config.experiment_name or 'train',
                  disable=jax.process_index() != 0 or not sys.stderr.isatty())
  buffer, previous = [], None
  clock = TrainClock()
  while step < s.total_steps and not preemption.requested:
    try:
      if batch is None:
        batch = parallel.to_global(next(train_iter), s.mesh)
    except cli.Preempted:
      if not preemption.requested:
        raise
      break  # saved below
    state, metrics = compiled(state, batch)
    batch = None
    step += 1
    if previous is not None:  # one step behind, so the device queue never drains
      _check_finite(previous, step - 1, manager)
    previous = metrics
    buffer.append(metrics)
    progress(step)
    bar.update(1)
    if step % config.log_summary_steps == 0 or step == s.total_steps:
      log_train(writer, history, step, _mean_metrics(buffer), train_iter)
      buffer = []
    if step % eval_every == 0 and step < s.total_steps:
      try:
        with clock.excluded():
          log_eval(s, writer, history, step, state.params, timing=clock.read())
      except cli.Preempted:
        if not preemption.requested:
          raise  # saved below
    if step % ckpt_every == 0 or step == s.total_steps or preemption.requested:
      _check_finite(metrics, step, manager)
      _check_state_finite(state, step, manager)
      save_checkpoint(s, manager, state, train_iter)
      saved_step = step
  if preemption.requested and saved_step != step:
    _check_state_finite(state, step, manager)
    save_checkpoint(s, manager, state, train_iter)
    saved_step = step
  bar.close()
  return state, clock, saved_step == step


class TrainClock:
  """Training seconds since the loop started, evaluation excluded: wall-clock time, and
  the CPU time of every thread of this process (input pipeline included). On a machine
  shared with other jobs the wall time stretches while the CPU time of the work itself
  hardly does, so comparisons between runs can use either."""

  def __init__(self):
    self._start = (time.time(), time.process_time())
    self._excluded = [0.0, 0.0]

  @contextlib.contextmanager
  def excluded(self):
    """Time spent inside does not count (evaluation)."""
    start = (time.time(), time.process_time())
    try:
      yield
    finally:
      self._excluded[0] += time.time() - start[0]
      self._excluded[1] += time.process_time() - start[1]

  def read(self) -> Dict[str, float]:
    return {'train_time_s': time.time() - self._start[0] - self._excluded[0],
            'train_cpu_s': time.process_time() - self._start[1] - self._excluded[1]}


def log_start(s: Setup, memory):
  counts = optimizers.count_params(s.state.params, s.parts.frozen)
  logging.info('Start: %s', s.start)
  logging.info('Parameters: %d trainable, %d frozen (%s)', counts['trainable'],
               counts['frozen'], ', '.join(s.parts.frozen) or 'nothing frozen')
  logging.info('Compiled train step memory: %s',
               ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in memory.items()))
  logging.info('%d steps (%d per epoch), global batch %d on %d devices / %d processes',
               s.total_steps, s.steps_per_epoch, s.config.batch_size, jax.device_count(),
               jax.process_count())


def log_train(writer, history, step, metrics, train_iter):
  metrics = dict(metrics, bad_records=train_iter.num_bad)
  writer.write_scalars(step, {f'train/{k}': v for k, v in metrics.items()})
  history.add(step, 'train', metrics)


def log_eval(s: Setup, writer, history, step, params,
             timing: Optional[Dict[str, float]] = None) -> Dict[str, float]:
  """Evaluates on the eval split; history also gets the training seconds so far
  (TrainClock.read(): wall and CPU, evaluation excluded, since this process started
  training), for time-to-accuracy."""
  if s.config.class_report.at_eval:
    result, report = evaluation.evaluate_in_detail(s, params, split='eval')
    write_class_report(s, 'eval', step, report)
    s.reports['eval'] = report
  else:
    result = evaluation.evaluate(s, params, split='eval')
  if result:
    writer.write_scalars(step, {f'eval/{k}': v for k, v in result.items()})
    history.add(step, 'eval', {**result, **(timing or {})})
  return result


def quiet_third_party_logs() -> None:
  """Library INFO lines (orbax's dozens per save) off unless --verbosity=1."""
  cli.quiet_library_logs()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False,
                       checked: Optional[startup.Checked] = None) -> Dict[str, Any]:
  """Trains and evaluates `config` in `workdir`; returns (and writes) the run summary.

  The start-up check (startup.check) runs first unless `checked`, what it returned to
  the caller, covers this config and workdir: a workdir with checkpoints of an
  incompatible config is refused before anything is written (workdir_guard;
  `allow_config_change` admits changes that keep the shapes), bad values, missing data
  and an unwritable workdir fail before anything compiles.
  config.json is written once the start (resume or init) succeeded. A run stopped by
  SIGTERM/SIGINT saves a checkpoint and returns {'preempted': signal name, 'step'}.
  """
  t0 = time.time()
  quiet_third_party_logs()
  startup.ensure_checked(config, workdir, allow_config_change, checked)
  s = setup(config, workdir)
  is_main = jax.process_index() == 0
  manager = checkpointing.make_manager(workdir, config.max_to_keep)
  s.state, data_state, s.start = setup_start(config, manager, s.state, s.parts, s.mesh)
  s.source.check_params(s.state.params, s.parts.frozen)
  if is_main:
    configs.save(config, workdir)
  train_iter = s.source.train_iterator(
      parallel.per_process_batch_size(config.batch_size), seed=config.rng_seed,
      state=data_state)
  writer = reporting.metric_writer(workdir, is_main)
  history = reporting.History(workdir, enabled=is_main)
  try:
    state, timing = train_loop(s, train_iter, manager, writer, history)
  finally:
    train_iter.close()  # the input threads stop now: evaluation does not need them
  if timing['preempted']:
    logging.warning('Stopped early (%s) at step %d; rerun the same command to resume.',
                    timing['preempted'], int(jax.device_get(state.step)))
    manager.close()
    writer.flush()
    return {'preempted': timing['preempted'], 'step': int(jax.device_get(state.step)),
            'saved': timing['saved']}
  summary = finish(s, state, timing, writer, history, t0)
  manager.close()
  writer.flush()
  return summary


def write_class_report(s: Setup, kind: str, step: int, report) -> None:
  """<kind>_per_class.json and <kind>_predictions.jsonl, from process 0."""
  if report is not None and jax.process_index() == 0:
    class_report.write(s.workdir, kind, step, report)


def final_tests(s: Setup, params, step: int) -> Dict[str, Dict[str, float]]:
  """{'test': ...} from the run's source; a run trained from a feature cache is also
  tested on the raw videos with the whole model ('test', comparable with every other
  run), its cached-feature test then reported as 'test_cached'. Each test writes its
  class report (class_report) to the workdir and returns it under 'reports'."""
  if not s.config.run_test:
    return {}
  out, reports = {}, {}
  if s.info.num_test_examples:
    out['test'], reports['test'] = evaluation.evaluate_in_detail(s, params, split='test')
  if isinstance(s.source, data_source.CachedSource) and s.config.feature_cache.test_on_video:
    try:
      on_video, report = evaluation.evaluate_in_detail(s, params, split='test',
                                                       on_video=True)
    except FileNotFoundError as e:  # the cache travels without its videos: fine
      logging.warning('No test on the raw videos (%s); the test is from the cache only.', e)
      on_video, report = {}, None
    if on_video:
      out['test_cached'], out['test'] = out.pop('test', {}), on_video
      reports['test_cached'], reports['test'] = reports.pop('test', None), report
  for kind, report in reports.items():
    write_class_report(s, kind, step, report)
  s.reports.update(reports)
  return {k: v for k, v in out.items() if v}


def plot_confusion(s: Setup) -> None:
  """confusion.png beside the curves: the final test's matrix (on the videos), else the
  final eval's when config.class_report.at_eval made one."""
  report = s.reports.get('test') or s.reports.get('eval')
  if report is not None:
    kind = 'test' if s.reports.get('test') else 'eval'
    class_report.plot_confusion(report, os.path.join(s.workdir, class_report.CONFUSION_PNG),
                                f'{s.config.experiment_name or "run"} {kind}')


def finish(s: Setup, state, timing, writer, history, t0) -> Dict[str, Any]:
  step = int(jax.device_get(state.step))
  final_eval = log_eval(s, writer, history, step, state.params,
                        timing={k: timing[k] for k in ('train_time_s', 'train_cpu_s')})
  test, tests = {}, final_tests(s, state.params, step)
  for kind, result in tests.items():
    writer.write_scalars(step, {f'{kind}/{k}': v for k, v in result.items()})
    history.add(step, kind, result)
  test = tests.get('test', {})
  counts = optimizers.count_params(state.params, s.parts.frozen)
  summary = {
      'experiment_name': s.config.experiment_name, 'stage': s.config.stage,
      'step': step, 'start': s.start, 'eval': final_eval, 'test': test,
      **({'test_cached': tests['test_cached']} if 'test_cached' in tests else {}),
      'feature_cache': s.config.feature_cache.dir or None,
      'train_time_s': timing['train_time_s'], 'train_cpu_s': timing['train_cpu_s'],
      'total_time_s': time.time() - t0,
      'compiled_step_memory_bytes': timing['memory'],
      'params': counts, 'frozen_modules': list(s.parts.frozen),
      'devices': jax.device_count(), 'processes': jax.process_count(),
      'config': s.config.to_dict(),
  }
  if jax.process_index() == 0:
    reporting.write_summary(s.workdir, summary)
    reporting.plot_curves(history, os.path.join(s.workdir, reporting.CURVES_FILE),
                          s.config.experiment_name or s.workdir)
    plot_confusion(s)
  logging.info('Done: eval %s, test %s, %.1fs training', final_eval, test,
               timing['train_time_s'])
  return summary
