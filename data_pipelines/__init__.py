"""Input pipelines: DMVR-format TFRecord shards (and tfds datasets) on tf.data.

The trainer's interface:

  info = dataset_info(config.dataset)
  it = make_train_iterator(config.dataset, batch_size, seed, state=None)
  batch = next(it); it.state  # resumable, bit for bit
  for batch in make_eval_iterator(config.dataset, split='eval', batch_size=...): ...

These names are loaded on first use: importing the package (or a light module of it,
such as `cli` or `fs`) must not import TensorFlow, so that every program's --help and
one-line errors come back at once.
"""

import importlib

_EXPORTS = {
    'BadDataError': 'data_pipelines.reader',
    'TrainIterator': 'data_pipelines.reader',
    'dataset_info': 'data_pipelines.reader',
    'make_eval_iterator': 'data_pipelines.reader',
    'make_train_iterator': 'data_pipelines.reader',
    'DatasetInfo': 'data_pipelines.source',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
