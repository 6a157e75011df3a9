"""Measures the training input pipeline (read, decode, augment) in clips per second.

`benchmark(config.dataset, ...)` is the measurement; its command line, which loads an
experiment file, is `python -m vivit_adapter.benchmark_data` (data_pipelines depends on
nothing in vivit_adapter).
"""

import time
from typing import Callable, Dict

from data_pipelines import reader


def benchmark(ds_cfg, batch_size: int, num_batches: int, warmup_batches: int = 2,
              seed: int = 0) -> Dict[str, float]:
  """Times `num_batches` training batches of the video shards after `warmup_batches`."""
  return time_iterator(
      lambda: reader.make_train_iterator(ds_cfg, batch_size=batch_size, seed=seed),
      batch_size, num_batches, warmup_batches)


def time_iterator(make_iterator: Callable, batch_size: int, num_batches: int,
                  warmup_batches: int = 2) -> Dict[str, float]:
  """Times `num_batches` batches of a training iterator (the reader's or a feature
  cache's) after `warmup_batches`, on this host."""
  start = time.perf_counter()
  iterator = make_iterator()
  try:
    for _ in range(warmup_batches):
      next(iterator)
    warm = time.perf_counter()
    for _ in range(num_batches):
      next(iterator)
    elapsed = time.perf_counter() - warm
  finally:
    iterator.close()  # its input threads stop now, not at the interpreter's exit
  return {'clips_per_s': num_batches * batch_size / elapsed, 'seconds': elapsed,
          'startup_seconds': warm - start, 'num_seen': iterator.num_seen,
          'num_bad': iterator.num_bad}
