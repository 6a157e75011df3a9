"""The study's data: the synthetic dataset it generates, or an existing DMVR dataset.

`prepare_synthetic` and `prepare_existing` return a `StudyData`: the folder the runs
read, the config.dataset overrides they need, and what the report says about the data,
including what was held out or substituted. Nothing is ever selected on the test split,
so a dataset without a validation split gets one held out of its training split.
"""

import dataclasses
import json
import os
import shutil
from typing import Dict, List, Tuple

from data_pipelines import dmvr_format
from data_pipelines import tf_runtime

# Every HOLDOUT_EVERY-th training record (the 10th, 20th, ...) becomes validation.
HOLDOUT_EVERY = 10
HOLDOUT_SOURCE = 'vivit_adapter.ablation hold-out'
TABLES = {'train': 'train.tfrecord@*', 'validation': 'validation.tfrecord@*',
          'test': 'test.tfrecord@*'}


@dataclasses.dataclass(frozen=True)
class StudyData:
  base_dir: str  # config.dataset.base_dir of every run
  overrides: Tuple[str, ...]  # further 'dataset.key=value' overrides
  description: Dict  # name, num_classes, splits, label_names, ..., notes
  synthetic: bool


# ----------------------------------------------------------------------------------------
# The synthetic dataset.
# ----------------------------------------------------------------------------------------

def prepare_synthetic(data_dir: str, generate_args: Dict, *, owned: bool,
                      has_runs: bool, generate: bool = True) -> StudyData:
  """Reuses `data_dir` when its metadata.json is what `generate_args` would write, else
  generates it there.

  Args:
    data_dir: the dataset folder.
    generate_args: keyword arguments of data_pipelines.synthetic.generate.
    owned: the folder is the study's own (<workdir>/data), which it may delete.
    has_runs: the workdir holds runs, trained on whatever the folder held.
    generate: False (--report_only): the data must exist, nothing is written.

  Raises:
    ValueError: the folder holds other data and may not be replaced: it is not the
      study's own, or runs were trained on it (they would be reused with new data);
      or it would have to be generated and `generate` is False.
  """
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from vivit_adapter.studies import demo  # pylint: disable=g-import-not-at-top
  why = demo.metadata_mismatch(data_dir, demo.requested_metadata(generate_args))
  meta_path = os.path.join(data_dir, dmvr_format.METADATA_FILE)
  if why is not None and os.path.exists(meta_path):
    if not owned or has_runs:
      raise ValueError(f'{why}: the study asks for other data (studies/ablation/plan.py). '
                       'Use another --workdir (or --data), or delete the old one.')
    shutil.rmtree(data_dir)
  if why is not None and not generate:
    raise ValueError(f'--report_only generates no data, and {why}. Run the study without '
                     '--report_only (or pass --data=DIR of the runs\' dataset).')
  if why is not None:
    print(f'Generating the synthetic dataset in {data_dir} ...', flush=True)
    synthetic.generate(data_dir, progress=False, **generate_args)
  with open(meta_path) as f:
    meta = json.load(f)
  description = {k: meta.get(k) for k in ('num_classes', 'label_names', 'splits',
                                          'resolution', 'num_frames', 'scene')}
  return StudyData(data_dir, (), dict(description, name='synthetic', notes=[]), True)


# ----------------------------------------------------------------------------------------
# An existing DMVR dataset.
# ----------------------------------------------------------------------------------------

def _has_table(base_dir: str, split: str) -> bool:
  try:
    return bool(dmvr_format.expand_table(TABLES[split], base_dir))
  except FileNotFoundError:
    return False


def _count(table: str, base_dir: str) -> int:
  from data_pipelines import reader  # pylint: disable=g-import-not-at-top
  return reader.count_records(dmvr_format.expand_table(table, base_dir))


def prepare_existing(dataset_dir: str, workdir: str, generate: bool = True) -> StudyData:
  """The study's view of a DMVR dataset it did not generate.

  The classes come from label_map.txt. Without a validation table, every 10th
  training record is held out as validation (written to <workdir>/data with the rest
  of the training split); without a test table, the dataset's validation table is the
  test split (and the held-out one the selection split); with neither, the held-out
  split is both, which the notes say. With generate=False (--report_only) the hold-out
  must exist already.
  """
  names = dmvr_format.read_label_map(os.path.join(dataset_dir, dmvr_format.LABEL_MAP_FILE))
  dmvr_format.expand_table(TABLES['train'], dataset_dir)  # fails now, naming the table
  has_val, has_test = _has_table(dataset_dir, 'validation'), _has_table(dataset_dir, 'test')
  base, test_table, notes = dataset_dir, TABLES['test'], []
  if not (has_val and has_test):
    base = os.path.join(workdir, 'data')
    missing = ' and '.join(s for s, has in (('validation', has_val), ('test', has_test))
                           if not has)
    notes.append(f'{dataset_dir} has no {missing} split. ' +
                 hold_out(dataset_dir, base, names, generate))
  if has_test and not has_val:
    test_table = os.path.join(dataset_dir, TABLES['test'])
  elif has_val and not has_test:
    test_table = os.path.join(dataset_dir, TABLES['validation'])
    notes.append(f'The test split is {dataset_dir}\'s validation split (reported once, '
                 'never used for selection).')
  elif not has_test:
    test_table = TABLES['validation']
    notes.append('The held-out split is also the test split: the test numbers come from '
                 'the split the schedules were chosen on (optimistic).')
  splits = {'train': _count(TABLES['train'], base),
            'validation': _count(TABLES['validation'], base),
            'test': _count(test_table, base)}
  description = {'name': dataset_dir, 'num_classes': len(names), 'label_names': names,
                 'splits': splits, 'resolution': None, 'num_frames': None, 'scene': None,
                 'notes': notes}
  overrides = (f'dataset.num_classes={len(names)}', f'dataset.test_table={test_table}')
  return StudyData(base, overrides, description, False)


def hold_out(source_dir: str, out_dir: str, names: List[str], generate: bool = True) -> str:
  """Splits source_dir's training records into out_dir's train and validation tables.

  Kept when out_dir already holds this split of the same source (else, with
  generate=False, a ValueError); returns the note the report shows.
  """
  tf = tf_runtime.import_tensorflow()
  files = dmvr_format.expand_table(TABLES['train'], source_dir)
  origin = {'source_files': files, 'every': HOLDOUT_EVERY}
  meta_path = os.path.join(out_dir, dmvr_format.METADATA_FILE)
  meta = {}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
  if meta.get('held_out_from') != origin and not generate:
    raise ValueError(f'--report_only generates no data, and {out_dir} does not hold the '
                     f'validation split held out of {source_dir}. Run the study without '
                     '--report_only.')
  if meta.get('held_out_from') != origin:
    shutil.rmtree(out_dir, ignore_errors=True)
    counts = {'train': 0, 'validation': 0}
    with dmvr_format.ShardedWriter(os.path.join(out_dir, 'train.tfrecord'), len(files)) as t, \
        dmvr_format.ShardedWriter(os.path.join(out_dir, 'validation.tfrecord'),
                                  len(files)) as v:
      for i, record in enumerate(tf.data.TFRecordDataset(files)):
        split = 'validation' if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else 'train'
        (v if split == 'validation' else t).write(record.numpy())
        counts[split] += 1
    meta = {'num_classes': len(names), 'label_names': list(names), 'splits': counts,
            'tables': {s: f'{s}.tfrecord@{len(files)}' for s in counts},
            'source': HOLDOUT_SOURCE, 'held_out_from': origin}
    dmvr_format.write_metadata(out_dir, meta)  # label_map.txt too
  n, total = meta['splits']['validation'], sum(meta['splits'].values())
  return (f'Every {HOLDOUT_EVERY}th training record ({n} of {total}) is held out as the '
          f'validation split (the selection split), in {out_dir}; training uses the other '
          f'{total - n}.')
