"""Measures the training input pipeline (read, decode, augment) in clips per second.

`benchmark(config.dataset, ...)` is the measurement; its command line, which loads an
experiment file, is `python -m vivit_adapter.benchmark_data` (data_pipelines depends on
nothing in vivit_adapter).
"""

import time
from typing import Dict

from data_pipelines import reader


def benchmark(ds_cfg, batch_size: int, num_batches: int, warmup_batches: int = 2,
              seed: int = 0) -> Dict[str, float]:
  """Times `num_batches` training batches after `warmup_batches`, on this host."""
  start = time.perf_counter()
  iterator = reader.make_train_iterator(ds_cfg, batch_size=batch_size, seed=seed)
  for _ in range(warmup_batches):
    next(iterator)
  warm = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  elapsed = time.perf_counter() - warm
  return {'clips_per_s': num_batches * batch_size / elapsed, 'seconds': elapsed,
          'startup_seconds': warm - start, 'num_seen': iterator.num_seen,
          'num_bad': iterator.num_bad}
