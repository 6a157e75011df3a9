"""The enlarged test split: more test clips from the study's own generator, and each row's
final model tested on them once more (issue 27: when the decisive differences are inside
the seed spread, more test clips; evaluation only, the checkpoints are kept).

The enlarged split is the synthetic data's test split at N clips per class
(--enlarged_test_per_class; docs/ablation_dial.md uses 100) instead of
plan.TEST_PER_CLASS: the same generator, scene and seed, so its first TEST_PER_CLASS
clips of each class are the study's test clips (a clip's pixels depend only on the seed,
the split, the class and its index) and the rest are new. Nothing is trained or selected
on it: a run's `test_large.json` is its final checkpoint tested the way the run tested
itself (multi-view, on the raw videos, the whole model).
"""

import json
import os
from typing import Dict, Optional

from data_pipelines import fs
from vivit_adapter.studies.ablation import data as study_data

RESULT_FILE = 'test_large.json'


def large_test_dir(workdir: str, per_class: int) -> str:
  return os.path.join(workdir, f'data_test{per_class}')


def prepare_large_test(workdir: str, generate_args: Dict, per_class: int,
                       generate: bool = True) -> study_data.StudyData:
  """The enlarged split's dataset folder (generated when missing): the study's synthetic
  data with `per_class` test clips per class and one clip per class in the other splits
  (which nothing reads; the trainer's set-up counts them)."""
  args = dict(generate_args, train_per_class=1, val_per_class=1, test_per_class=per_class)
  return study_data.prepare_synthetic(large_test_dir(workdir, per_class), args, owned=True,
                                      has_runs=False, generate=generate)


def read_result(run_dir: str, test_dir: str) -> Optional[Dict]:
  """The run's test on `test_dir`, when it was made there (None otherwise)."""
  path = os.path.join(run_dir, RESULT_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    result = json.load(f)
  return result if result.get('test_dir') == os.path.abspath(test_dir) else None


def ensure_result(run_dir: str, test_dir: str, *, train: bool = True) -> Optional[Dict]:
  """The run's final model tested on `test_dir`'s test split: read when done before,
  else computed now and written (atomically) to <run_dir>/test_large.json; with
  train=False (--report_only) only read."""
  result = read_result(run_dir, test_dir)
  if result is not None or not train:
    return result
  metrics, step = test_run(run_dir, test_dir)
  result = {'test_dir': os.path.abspath(test_dir), 'step': step,
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
  fs.atomic_write(os.path.join(run_dir, RESULT_FILE),
                  json.dumps(result, indent=2, sort_keys=True))
  return result


def test_run(run_dir: str, test_dir: str):
  """(test metrics, step) of the run's final checkpoint on `test_dir`'s test split,
  as the run's own final test computes them (trainer.final_tests: multi-view, the whole
  model on the raw videos, whatever the run trained from)."""
  # pylint: disable=g-import-not-at-top
  from vivit_adapter import configs
  from vivit_adapter import inference
  from vivit_adapter.train_lib import evaluation
  from vivit_adapter.train_lib import trainer
  # pylint: enable=g-import-not-at-top
  config = configs.load_saved(run_dir)
  config.dataset.base_dir = test_dir
  for key in ('num_train_examples', 'num_eval_examples', 'num_test_examples'):
    config.dataset[key] = 0  # counted from test_dir's metadata
  config.feature_cache.dir = ''  # the raw videos, the whole model
  config.init_from.checkpoint_path = ''  # the parameters are the run's checkpoint
  _, _, params, step = inference.load_run(run_dir, config=config)
  s = trainer.setup(config, run_dir)
  metrics = evaluation.evaluate(s, params, split='test')
  if not metrics:
    raise ValueError(f'{test_dir} has no test split (test.tfrecord@*): nothing to test '
                     f'{run_dir} on.')
  return metrics, step
