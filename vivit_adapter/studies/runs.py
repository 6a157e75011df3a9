"""Reuse a finished run or train it from scratch: the one rule of every study.

A study (the demo, the ablation) asks for a run as a config and a run directory:
* a run that finished (its summary.json exists) with the same config is reused;
* a finished run of another config is an error that names the keys that differ: a
  finished run is never deleted behind the user's back (the ablation's took hours);
* anything else in the directory (an interrupted run) is deleted and the run trains
  from scratch. It is not resumed: the trainer's train_time_s counts only the training
  done by the process that finishes the run, and the studies' tables compare whole
  runs' training times.

"The same config" means the same value for every key that both the saved config and
the asked one have: a key added to (or removed from) configs.py since the run finished
does not make it stale, since a new key's default keeps the old behaviour.

Results are read through `train_lib.reporting`: the summary from SUMMARY_FILE and the
eval curve from its `History`.
"""

import contextlib
import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence

import ml_collections

from data_pipelines import cli
from vivit_adapter import configs
from vivit_adapter.train_lib import reporting
from vivit_adapter.train_lib import run_lock


def finished_summary(run_dir: str) -> Optional[Dict[str, Any]]:
  """The run's summary with its 'eval_curve' added; None if the run has not finished."""
  path = os.path.join(run_dir, reporting.SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  if summary.get('preempted'):
    return None
  summary['eval_curve'] = eval_curve(run_dir, summary)
  return summary


def first_at(curve: Sequence[Dict[str, float]], target: float, clock: str
             ) -> Optional[float]:
  """`clock` ('step', 'train_time_s', 'train_cpu_s') at the first evaluation of `curve`
  (`eval_curve`) whose top-1 reaches `target` (%); None if none does. Read at
  evaluations, so a time to accuracy is an upper bound."""
  return next((p[clock] for p in curve if p['top1'] >= target), None)


def eval_curve(run_dir: str, summary: Dict[str, Any]) -> List[Dict[str, float]]:
  """[{step, top1 (%), train_time_s, train_cpu_s}] of every evaluation of a finished run.

  The trainer records the training wall and CPU seconds of each evaluation; for runs
  from before it did, they are estimated from the step (steps cost the same: time ∝
  step; CPU None when the summary has none either).
  """
  steps = max(summary['step'], 1)
  per_step = summary['train_time_s'] / steps
  cpu_per_step = summary.get('train_cpu_s')
  cpu_per_step = None if cpu_per_step is None else cpu_per_step / steps
  return [{'step': r['step'], 'top1': 100 * r['top1'],
           'train_time_s': r.get('train_time_s', r['step'] * per_step),
           'train_cpu_s': r.get('train_cpu_s', None if cpu_per_step is None
                                else r['step'] * cpu_per_step)}
          for r in reporting.History(run_dir).rows('eval') if 'top1' in r]


def mismatch_message(config: ml_collections.ConfigDict, run_dir: str,
                     summary: Dict[str, Any]) -> Optional[str]:
  """Why the finished run in `run_dir` cannot stand for `config`; None when it can."""
  differ = list(configs.differences(summary.get('config', {}), config))
  if not differ:
    return None
  return (f'{os.path.join(run_dir, reporting.SUMMARY_FILE)} is a finished run of another '
          f'config (keys that differ: {", ".join(differ)}). Delete {run_dir} to rerun it, '
          'or use another --workdir.')


def reusable_summary(config: ml_collections.ConfigDict,
                     run_dir: str) -> Optional[Dict[str, Any]]:
  """The finished run's summary if it ran `config`; None if it has not finished.

  Raises:
    ValueError: `run_dir` holds a finished run of another config.
  """
  summary = finished_summary(run_dir)
  if summary is not None:
    message = mismatch_message(config, run_dir, summary)
    if message:
      raise ValueError(message)
  return summary


def train_from_scratch(config: ml_collections.ConfigDict, run_dir: str,
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Deletes an unfinished run in `run_dir`, trains `config` there; returns its summary.

  The summary is read back as `finished_summary` reads it (eval curve included), so a
  trained run and a reused one look the same.

  Raises:
    cli.ConfigError: another live process holds the run's lock (`train_lib.run_lock`):
      it is training this run now; nothing is deleted (the same for a cache).
    cli.Preempted: the run was stopped (SIGTERM) before it finished, after saving: a
      SystemExit with the PREEMPTED exit code, so the study's process exits with it.
  """
  from vivit_adapter.train_lib import trainer  # pylint: disable=g-import-not-at-top
  if os.path.exists(run_dir):
    _discard(run_dir, f'Discarding the unfinished run in {run_dir} (a resumed run would '
             'time only its last part).', log)
  with _locked(run_dir):  # as `main` does: one run per workdir
    summary = trainer.train_and_evaluate(config, run_dir)
  if summary.get('preempted'):
    raise cli.Preempted(f'{run_dir} was stopped (SIGTERM) at step {summary["step"]}; run the '
                        'same command again: finished runs are reused, this one restarts.')
  return finished_summary(run_dir)


EXTRACTION_FILE = 'extraction.json'


def ensure_cache(config: ml_collections.ConfigDict, cache_dir: str, *, views: int,
                 dtype: str = 'bfloat16', log: Callable[[str], None] = print) -> Dict[str, Any]:
  """The feature cache of stage-2 `config` in `cache_dir`, by the same rule as runs.

  A complete cache made for exactly this config and these frozen parameters (the
  extraction's own manifest check) is reused; an interrupted one, or one made from
  other frozen parameters or settings (a retrained stage 1), is deleted and made again:
  a cache is derived data, and its extraction time must be whole. Returns {'seconds' (extraction time,
  compilation excluded), 'views', 'dtype', 'reused'}, also kept in
  cache_dir/extraction.json.
  """
  from data_pipelines import feature_cache  # pylint: disable=g-import-not-at-top
  record = os.path.join(cache_dir, EXTRACTION_FILE)
  if os.path.exists(cache_dir) and not os.path.exists(record):
    _discard(cache_dir, f'Discarding the unfinished feature cache in {cache_dir}.', log)
  try:
    with _locked(cache_dir):
      stats = _extract(config, cache_dir, views, dtype)
  except feature_cache.CacheError as e:
    _discard(cache_dir, f'Discarding the feature cache in {cache_dir}, made for another run '
             f'({e}).', log)
    with _locked(cache_dir):
      stats = _extract(config, cache_dir, views, dtype)
  if os.path.exists(record):  # the manifest matched and every shard was there
    with open(record) as f:
      return dict(json.load(f), reused=True)
  result = {'seconds': stats['seconds'], 'cpu_seconds': stats['cpu_seconds'],
            'views': views, 'dtype': dtype,
            'written': {k: v['written'] for k, v in stats.items()
                        if k not in ('seconds', 'cpu_seconds')}}
  with open(record, 'w') as f:
    json.dump(result, f, indent=2)
  return dict(result, reused=False)


def _discard(path: str, message: str, log: Callable[[str], None]) -> None:
  """Deletes an unfinished run or cache, unless another live process holds its lock
  (a second study process on the same workdir, making it now): then cli.ConfigError
  names that process and nothing is deleted."""
  run_lock.acquire(path)
  run_lock.release(path)
  log(message)
  shutil.rmtree(path)


@contextlib.contextmanager
def _locked(path: str):
  """`path` (created) locked by this process while a run trains or a cache is made."""
  os.makedirs(path, exist_ok=True)
  run_lock.acquire(path)
  try:
    yield
  finally:
    run_lock.release(path)


def _extract(config, cache_dir: str, views: int, dtype: str) -> Dict[str, Any]:
  from vivit_adapter import extract_features  # pylint: disable=g-import-not-at-top
  return extract_features.run(config, cache_dir, views=views, dtype=dtype,
                              splits=['train', 'eval', 'test'], videos_per_batch=0,
                              command=f'{__name__}.ensure_cache')
