"""What a dataset is to the reader: its sizes and class names, and where a split's records are.

Both record formats (DMVR shards in `reader`, tfds datasets in `tfds_reader`) describe
themselves with these types, so the two modules import this one and not each other.
"""

import dataclasses
from typing import Callable, List, Optional


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  num_test_examples: int
  label_names: Optional[List[str]]


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one split's records live and how to parse one.

  Attributes:
    table: the table name as configured (for messages).
    files: TFRecord files holding the split, sorted.
    parse: serialized record -> (encoded frames, string vector; label, int64 scalar or -1
      when missing). Works in graph and eagerly.
  """
  table: str
  files: List[str]
  parse: Callable
