"""Evaluation over a whole split (eval: one centre view; test: multi-view per video)."""

import json
from typing import Any, Dict, List

import jax
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines import cli
from vivit_adapter.train_lib import assembly, data_source, parallel, steps


def test_batch_size(config) -> int:
  """Videos per test batch: eval_batch_size views, rounded to the device count."""
  views = config.dataset.num_test_clips * config.dataset.num_test_crops
  devices = jax.device_count()
  return max(devices, (config.eval_batch_size // views) // devices * devices)


def _step_fn(s, split: str, part: str):
  """The run's jitted eval or test step for one model part, built once per run (kept on
  its Setup)."""
  key = (split, part)
  if key not in s.eval_fns:
    model = assembly.ModelPart(s.model, part)
    fn = (steps.make_eval_step(model, s.info.num_classes) if split == 'eval'
          else steps.make_test_step(model))
    s.eval_fns[key] = jax.jit(
        fn, in_shardings=(parallel.replicated(s.mesh), parallel.batch_sharding(s.mesh)),
        out_shardings=parallel.replicated(s.mesh))
  return s.eval_fns[key]


def evaluate(s, params, split: str, *, on_video: bool = False) -> Dict[str, float]:
  """Top-1/top-5 (and loss for 'eval') over the split; {} when the split is empty.

  The run's own source (video, or its feature cache) by default; `on_video` evaluates
  the whole model on the dataset's videos whatever the source (a cached run's final
  test, comparable with every other run's).
  """
  source = data_source.VideoSource(s.config) if on_video else s.source
  size = source.info.num_eval_examples if split == 'eval' else source.info.num_test_examples
  if not size:
    return {}
  batch = s.config.eval_batch_size if split == 'eval' else test_batch_size(s.config)
  iterator = source.eval_iterator(
      split, parallel.per_process_batch_size(batch, 'config.eval_batch_size'))
  fn = _step_fn(s, split, source.part)
  totals = None
  for i, host_batch in enumerate(iterator):
    if s.config.max_eval_batches and i >= s.config.max_eval_batches:
      break
    out = fn(params, parallel.to_global(host_batch, s.mesh))
    totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  _refuse_nonfinite(float(totals.pop('nonfinite', 0.)), count, split)
  return {k: float(v) / max(count, 1.0) for k, v in totals.items()} | {'count': count}


def _refuse_nonfinite(nonfinite: float, count: float, split: str) -> None:
  """NaN or infinite logits are a diverged model, never a score (top-1 would count them
  correct): the run ends with cli.DIVERGED."""
  if nonfinite:
    raise cli.DivergedError(
        f'The model gives NaN or infinite logits on {nonfinite:.0f} of {count:.0f} '
        f'{split} examples: its parameters diverged, so there is no {split} score. '
        'Lower config.lr_configs.base_learning_rate or check the input data.')


def gather_json(obj) -> List[Any]:
  """Every process's JSON-serialisable `obj`, in process order."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([data.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:data.size] = data
  gathered = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:int(n)]).decode())
          for row, n in zip(np.asarray(gathered), np.asarray(lengths).ravel())]



