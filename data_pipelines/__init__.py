"""Input pipelines: DMVR-format TFRecord shards (and tfds datasets) on tf.data.

The trainer's interface:

  info = dataset_info(config.dataset)
  it = make_train_iterator(config.dataset, batch_size, seed, state=None)
  batch = next(it); it.state  # resumable, bit for bit
  for batch in make_eval_iterator(config.dataset, split='eval', batch_size=...): ...
"""

from data_pipelines.reader import BadDataError
from data_pipelines.reader import dataset_info
from data_pipelines.reader import make_eval_iterator
from data_pipelines.reader import make_train_iterator
from data_pipelines.reader import TrainIterator
from data_pipelines.source import DatasetInfo

__all__ = ['BadDataError', 'DatasetInfo', 'TrainIterator', 'dataset_info',
           'make_eval_iterator', 'make_train_iterator']
