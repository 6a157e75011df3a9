"""The resumable training stream that both training iterators are built on: video
records (`reader.TrainIterator`) and cached features (`feature_cache.CacheTrainIterator`).

Per host (each host reads its own files; see `host_files`):

  epoch e: host files in an order drawn from (seed, e)
    -> records interleaved from those files (the caller's `read`)
    -> cut into blocks of `block` records, each block permuted from (seed, e, block)
    -> every record gets its *position* in that order (epoch e, position p).

Every random choice the iterators make downstream is drawn from `fold(base_seed, tag,
epoch, position)`, so the position of the record after the last one handed out is all
a resumed stream needs: `state` holds it, and `epochs` restarts there, skipping raw
records up to it, bit for bit however far tf.data had prefetched.

Also here, shared by every iterator of the package: the per-host split of files, the
default process index and count, the tf.data options, the padding of evaluation batches,
and the closing of training iterators at exit.
"""

import atexit
from typing import Callable, Dict, List, Optional
import weakref

import numpy as np

from data_pipelines import cli
from data_pipelines import interruptible
from data_pipelines import tf_runtime

tf = tf_runtime.import_tensorflow()

MAX_EPOCHS = 2**40
# Tags that keep the random streams of different uses apart. The stream's own; the
# iterators draw with theirs (reader: 3, feature_cache: 11 and 12).
_TAG_FILES, _TAG_BLOCK = 1, 2


def host_files(files: List[str], process_index: int, process_count: int,
               table: str = '') -> List[str]:
  """The files this host reads: every file goes to exactly one host."""
  if len(files) < process_count:
    raise ValueError(
        f'Table {table!r} has {len(files)} file(s) but there are {process_count} hosts; '
        'every host needs at least one file. Write the table with at least as many '
        'shards as hosts (e.g. name.tfrecord@N with N a multiple of the host count).')
  return files[process_index::process_count]


def resolve_process(process_index: Optional[int], process_count: Optional[int]):
  """(process_index, process_count), JAX's where not given; checked."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} outside [0, {process_count}).')
  return process_index, process_count


def deterministic_options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def fold(seed, *data):
  """`seed` with each of `data` folded in: the stateless seed of one random choice."""
  for d in data:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int64))
  return seed


def base_seed(seed: int, process_index: int):
  """The seed every random choice of this host's stream is folded from."""
  return tf.constant([seed, process_index], tf.int64)


def initial_state(seed: int, process_index: int, process_count: int,
                  state: Optional[dict]) -> Dict[str, int]:
  """A fresh stream's state, or `state` checked against this run."""
  fresh = {'epoch': 0, 'position': 0, 'num_seen': 0, 'num_bad': 0, 'seed': seed,
           'process_index': process_index, 'process_count': process_count}
  if state is None:
    return fresh
  if set(state) != set(fresh):
    raise ValueError(f'Input pipeline state has keys {sorted(state)}, expected '
                     f'{sorted(fresh)}.')
  for key in ('seed', 'process_index', 'process_count'):
    if int(state[key]) != fresh[key]:
      # The user's choice (another seed, another number of hosts), not a bug: one line.
      raise cli.ConfigError(
          f'Input pipeline state was saved with {key}={state[key]} but this run has '
          f'{key}={fresh[key]}; the stream cannot be resumed. Resume with the seed and '
          'number of processes the checkpoint was saved with, or use a new --workdir.')
  return {k: int(v) for k, v in state.items()}


def epoch_order(files: List[str], epoch, seed, start, block: int,
                read: Callable[[tf.Tensor], tf.data.Dataset]) -> tf.data.Dataset:
  """Records of one epoch in shuffled order, with positions, from position `start`.

  `read` maps the files (a string vector, in this epoch's order) to their records,
  each a dict with an 'index' entry.
  """
  keys = tf.random.stateless_uniform([len(files)], fold(seed, _TAG_FILES, epoch))
  records = read(tf.gather(tf.constant(files), tf.argsort(keys)))
  first_block = start // block
  # Whole blocks before the resume point are skipped as raw bytes, never parsed.
  blocks = records.skip(first_block * block).batch(block).enumerate(first_block)

  def permute(b, recs):
    n = tf.shape(recs['index'])[0]
    order = tf.argsort(tf.random.stateless_uniform([n], fold(seed, _TAG_BLOCK, epoch, b)))
    out = {k: tf.gather(v, order) for k, v in recs.items()}
    out['position'] = b * block + tf.range(n, dtype=tf.int64)
    out['epoch'] = tf.fill([n], epoch)
    return out

  return blocks.map(permute).unbatch().skip(start % block)


def epochs(files: List[str], state: Dict[str, int], seed, block: int,
           read: Callable[[tf.Tensor], tf.data.Dataset]) -> tf.data.Dataset:
  """The endless stream from `state`'s epoch and position on (see `epoch_order`)."""
  def epoch(e):
    first = tf.where(e == state['epoch'], tf.constant(state['position'], tf.int64), 0)
    return epoch_order(files, e, seed, first, block, read)
  return tf.data.Dataset.range(state['epoch'], MAX_EPOCHS).flat_map(epoch)


def pad(batch: Dict[str, np.ndarray], batch_size: int) -> Dict[str, np.ndarray]:
  """An evaluation batch filled up to `batch_size` with zeros of batch_mask 0."""
  n = len(batch['label'])
  padding = [(0, batch_size - n)]
  return {
      'inputs': np.pad(batch['inputs'], padding + [(0, 0)] * (batch['inputs'].ndim - 1)),
      'label': np.pad(batch['label'], padding).astype(np.int32),
      'batch_mask': np.pad(np.ones(n, np.float32), padding),
  }


def empty_batch(input_shape, dtype, batch_size: int) -> Dict[str, np.ndarray]:
  """A batch of padding only: what a host whose share ran out yields while others step."""
  return pad({'inputs': np.zeros((0,) + tuple(input_shape), dtype),
              'label': np.zeros(0, np.int32)}, batch_size)


# The training iterators not closed yet, closed at exit (`ClosableIterator`).
_OPEN_ITERATORS = weakref.WeakSet()


@atexit.register
def close_open_iterators() -> None:
  """Closes every training iterator still open. At exit, before the interpreter tears
  down: a tf.data iterator whose threads run Python (the bad-record logger's
  py_function) and that is collected during teardown can wait forever on them."""
  for iterator in list(_OPEN_ITERATORS):
    iterator.close()


class ClosableIterator:
  """The training iterators' tf.data iterator, with `close()`: it stops the input
  pipeline's threads now, while they can still finish; every open one is closed at exit."""
  _iterator = None

  def _open(self, dataset: tf.data.Dataset) -> None:
    self._iterator = iter(dataset)
    _OPEN_ITERATORS.add(self)

  def close(self) -> None:
    self._iterator = None
    _OPEN_ITERATORS.discard(self)

  def _next_batch(self) -> Dict[str, np.ndarray]:
    if self._iterator is None:
      raise ValueError(f'This {type(self).__name__} is closed; make a new one (with its '
                       'state to continue where it stopped).')
    batch = interruptible.next_of(self._iterator, 'training data')
    return {k: v.numpy() for k, v in batch.items()}


class StreamIterator(ClosableIterator):
  """An infinite iterator of batches of `epochs`, with a resumable `state`.

  Subclasses set `_state` (`initial_state`), open their dataset and, per batch, call
  `_advance`. `state` is JSON-serialisable; the subclass's maker given it continues
  with the batch this iterator returns next.
  """
  _state: Dict[str, int]

  @property
  def state(self) -> dict:
    return dict(self._state)

  @property
  def num_seen(self) -> int:
    return self._state['num_seen']

  def __iter__(self):
    return self

  def _advance(self, batch: Dict[str, np.ndarray], **counts: int) -> None:
    """The state after `batch`: the position after its last record, and `counts`."""
    self._state.update(epoch=int(batch['epoch'][-1]),
                       position=int(batch['position'][-1]) + 1, **counts)
