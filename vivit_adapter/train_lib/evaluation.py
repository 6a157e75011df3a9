"""Evaluation over a whole split (eval: one centre view; test: multi-view per video)."""

import json
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines import cli
from data_pipelines import reader
from vivit_adapter.train_lib import assembly, class_report, data_source, parallel, steps


def test_batch_size(config) -> int:
  """Videos per test batch: eval_batch_size views, rounded to the device count."""
  views = config.dataset.num_test_clips * config.dataset.num_test_crops
  devices = jax.device_count()
  return max(devices, (config.eval_batch_size // views) // devices * devices)


def _base_step(s, split: str):
  """model -> the run's eval or test step (sums) on that model."""
  if split == 'eval':
    return lambda model: steps.make_eval_step(model, s.info.num_classes)
  return steps.make_test_step


def _scores(split: str):
  """(logits, batch) -> each video's class scores, as the split's step scores them."""
  if split == 'eval':
    return lambda logits, batch: jax.nn.softmax(logits.astype(jnp.float32))
  return lambda logits, batch: steps.view_probabilities(logits, batch['label'].shape[0])


def _step_fn(s, split: str, part: str, top_k: int = 0):
  """The run's jitted eval or test step for one model part, built once per run (kept on
  its Setup). With `top_k` > 0, the detailed step: (sums, per-example top-k), the
  per-example outputs left sharded along the batch."""
  key = (split, part, top_k)
  if key not in s.eval_fns:
    model = assembly.ModelPart(s.model, part)
    out_shardings = parallel.replicated(s.mesh)
    if top_k:
      fn = class_report.make_detailed_step(_base_step(s, split), _scores(split), model,
                                           top_k)
      out_shardings = (out_shardings, parallel.batch_sharding(s.mesh))
    else:
      fn = _base_step(s, split)(model)
    s.eval_fns[key] = jax.jit(
        fn, in_shardings=(parallel.replicated(s.mesh), parallel.batch_sharding(s.mesh)),
        out_shardings=out_shardings)
  return s.eval_fns[key]


def evaluate(s, params, split: str, *, on_video: bool = False) -> Dict[str, float]:
  """Top-1/top-5 (and loss for 'eval') over the split; {} when the split is empty.

  The run's own source (video, or its feature cache) by default; `on_video` evaluates
  the whole model on the dataset's videos whatever the source (a cached run's final
  test, comparable with every other run's).
  """
  return _evaluate(s, params, split, on_video, top_k=0)[0]


def evaluate_in_detail(s, params, split: str, *, on_video: bool = False
                       ) -> Tuple[Dict[str, float], Optional[class_report.Report]]:
  """`evaluate`, plus mean class accuracy and the class report (per-class accuracy, the
  confusion matrix, a line per video) of every example of every process; ({}, None)
  when the split is empty."""
  metrics, lines = _evaluate(s, params, split, on_video, top_k=s.config.class_report.top_k)
  if not metrics:
    return {}, None
  lines = [line for share in gather_json(lines) for line in share]
  if len(lines) != int(metrics['count']):
    raise RuntimeError(f'The {split} class report has {len(lines)} videos but the '
                       f'evaluation counted {metrics["count"]}.')
  report = class_report.Report.from_lines(lines, s.info.num_classes, s.info.label_names)
  return {**metrics, **report.scalars()}, report


def _evaluate(s, params, split: str, on_video: bool, top_k: int):
  """(metrics, this process's per-video lines: [] unless top_k > 0)."""
  source = data_source.VideoSource(s.config) if on_video else s.source
  size = source.info.num_eval_examples if split == 'eval' else source.info.num_test_examples
  if not size:
    return {}, []
  batch = s.config.eval_batch_size if split == 'eval' else test_batch_size(s.config)
  iterator = source.eval_iterator(
      split, parallel.per_process_batch_size(batch, 'config.eval_batch_size'))
  fn = _step_fn(s, split, source.part, top_k)
  totals, lines = None, []
  for i, host_batch in enumerate(iterator):
    if s.config.max_eval_batches and i >= s.config.max_eval_batches:
      break
    # Where each example came from stays on the host (strings are no device input).
    sources = {k: host_batch.pop(k) for k in reader.SOURCE_KEYS if k in host_batch}
    out = fn(params, parallel.to_global(host_batch, s.mesh))
    if top_k:
      out, per_example = out
      lines += class_report.video_lines(class_report.local_rows(per_example), host_batch,
                                        sources)
    totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  _refuse_nonfinite(float(totals.pop('nonfinite', 0.)), count, split)
  return {k: float(v) / max(count, 1.0) for k, v in totals.items()} | {'count': count}, lines


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



