"""Per-class results of an evaluation: per-class and mean class accuracy, the confusion
matrix, one line per video, and a picture of the matrix.

Files in the workdir, for each evaluation `kind` ('test', 'test_cached', 'eval'):
  <kind>_per_class.json    per-class accuracy, mean class accuracy, the confusion matrix
                           (rows: true class, columns: predicted class) and label names;
  <kind>_predictions.jsonl one line per video: where it came from (shard, record), its
                           label, the top-k classes with their scores;
  confusion.png            the final test's matrix (or the final eval's when there is no
                           test), beside training_curves.png.

The device computes only what is per example (the top-k classes and scores of each
video); everything per class is computed here, on the host, from the per-video lines of
every process gathered together, so each example counts exactly once however many
processes and devices evaluated it.

A video whose scores are not all finite (NaN/inf logits) has no predicted class: it
counts in its class's support, never as correct and in no column of the matrix
('unscored').
"""

import dataclasses
import io
import json
import os
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import fs

PER_CLASS_FILE = '{kind}_per_class.json'
PREDICTIONS_FILE = '{kind}_predictions.jsonl'
CONFUSION_PNG = 'confusion.png'
# Above this many classes the matrix is drawn without tick labels and the picture lists
# the largest off-diagonal cells instead (400 names do not fit along an axis).
MAX_LABELLED_CLASSES = 40
# Up to this many classes each cell shows its count.
MAX_ANNOTATED_CLASSES = 15
NUM_TOP_CONFUSIONS = 30


# ----------------------------------------------------------------------------------------
# On the device: the per-example outputs of a detailed eval or test step.
# ----------------------------------------------------------------------------------------

class _Recorder:
  """A model whose `apply` also keeps what it returned.

  The detailed step runs the run's own eval/test step on it and reads the logits that
  step computed: one forward pass, and the base step stays the one owner of
  top-1/top-5/loss (what counts as correct is decided there only).
  """

  def __init__(self, model):
    self.model = model
    self.outputs = []

  def apply(self, *args, **kwargs):
    out = self.model.apply(*args, **kwargs)
    self.outputs.append(out)
    return out


def make_detailed_step(make_step: Callable, scores_fn: Callable, model, top_k: int):
  """`step(params, batch) -> (sums, per_example)`.

  Args:
    make_step: model -> the base step (params, batch) -> sums (steps.make_eval_step or
      make_test_step with its other arguments bound).
    scores_fn: (logits, batch) -> (B, classes) class scores of each video, as the base
      step scores them (softmax; averaged over the views for the test).
    model: the model (part) the base step runs.
    top_k: classes kept per example.
  """

  def step(params, batch):
    recorder = _Recorder(model)
    sums = make_step(recorder)(params, batch)
    (logits,) = recorder.outputs
    scores = scores_fn(logits, batch)
    k = min(top_k, scores.shape[-1])
    # lax.top_k puts the lower class index first among equal scores, as topk_correct ranks.
    top_scores, top_index = jax.lax.top_k(scores, k)
    return sums, {'top_index': top_index, 'top_score': top_scores,
                  'finite': jnp.all(jnp.isfinite(scores), axis=-1)}

  return step


def local_rows(per_example: Dict[str, jax.Array]) -> Dict[str, np.ndarray]:
  """This process's rows of batch-sharded outputs, in the order it fed them."""
  def local(x):
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])
  return {k: local(v) for k, v in per_example.items()}


# ----------------------------------------------------------------------------------------
# On the host: per-video lines, then everything per class.
# ----------------------------------------------------------------------------------------

def video_lines(rows: Dict[str, np.ndarray], batch: Dict[str, np.ndarray],
                sources: Dict[str, np.ndarray]) -> List[Dict[str, Any]]:
  """One JSON-ready dict per real (batch_mask 1) example of a batch."""
  lines = []
  for i in np.flatnonzero(np.asarray(batch['batch_mask']) > 0):
    line = {}
    if 'shard' in sources:  # a feature cache keeps no record names
      line = {'shard': str(sources['shard'][i]), 'record': int(sources['record'][i])}
    line['label'] = int(batch['label'][i])
    finite = bool(rows['finite'][i])
    line['top_k'] = [[int(c), float(p) if finite else None]
                     for c, p in zip(rows['top_index'][i], rows['top_score'][i])]
    line['predicted'] = int(rows['top_index'][i][0]) if finite else None
    lines.append(line)
  return lines


def class_metrics(labels: np.ndarray, predicted: np.ndarray,
                  num_classes: int) -> Dict[str, Any]:
  """Confusion matrix and per-class accuracy of `labels` against `predicted` (-1: no
  prediction, a video with non-finite scores).

  Mean class accuracy averages the classes that have examples; a class without any has
  accuracy None and is left out of the mean.
  """
  labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
  support = np.bincount(labels, minlength=num_classes)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  scored = predicted >= 0
  np.add.at(confusion, (labels[scored], predicted[scored]), 1)
  correct = np.diag(confusion)
  present = support > 0
  accuracy = np.where(present, correct / np.maximum(support, 1), np.nan)
  return {
      'confusion': confusion, 'support': support, 'correct': correct,
      'per_class_accuracy': accuracy,
      'mean_class_accuracy': float(np.mean(accuracy[present])) if present.any() else 0.,
      'unscored': support - confusion.sum(axis=1),
  }


@dataclasses.dataclass
class Report:
  """One evaluation's per-class results and per-video lines (every process's)."""
  num_classes: int
  label_names: Optional[List[str]]
  lines: List[Dict[str, Any]]
  metrics: Dict[str, Any]

  @classmethod
  def from_lines(cls, lines, num_classes: int, label_names: Optional[List[str]]):
    labels = np.array([l['label'] for l in lines], np.int64)
    predicted = np.array([-1 if l['predicted'] is None else l['predicted'] for l in lines],
                         np.int64)
    return cls(num_classes, label_names, lines, class_metrics(labels, predicted,
                                                              num_classes))

  def name(self, c: int) -> str:
    return self.label_names[c] if self.label_names else f'class_{c}'

  def scalars(self) -> Dict[str, float]:
    """What summary.json and TensorBoard carry."""
    return {'mean_class_accuracy': self.metrics['mean_class_accuracy']}

  def per_class_json(self, kind: str, step: int) -> Dict[str, Any]:
    m = self.metrics
    classes = [{'index': c, 'label': self.name(c), 'support': int(m['support'][c]),
                'correct': int(m['correct'][c]),
                'accuracy': (None if np.isnan(m['per_class_accuracy'][c])
                             else float(m['per_class_accuracy'][c])),
                'unscored': int(m['unscored'][c])} for c in range(self.num_classes)]
    return {'kind': kind, 'step': step, 'count': len(self.lines),
            'mean_class_accuracy': m['mean_class_accuracy'],
            'labels': [self.name(c) for c in range(self.num_classes)],
            'per_class': classes,
            'confusion': m['confusion'].tolist(),
            'confusion_axes': 'rows: true class, columns: predicted class (labels order)',
            'top_confusions': self.top_confusions(NUM_TOP_CONFUSIONS)}

  def named_lines(self) -> List[Dict[str, Any]]:
    """The per-video lines with class names beside the indices."""
    out = []
    for line in self.lines:
      named = {k: v for k, v in line.items() if k not in ('top_k', 'predicted')}
      named['label_name'] = self.name(line['label'])
      named['top_k'] = [{'index': c, 'label': self.name(c), 'score': p}
                        for c, p in line['top_k']]
      out.append(named)
    return out

  def top_confusions(self, n: int) -> List[Dict[str, Any]]:
    """The n largest off-diagonal cells: true -> predicted, count, share of true."""
    confusion = self.metrics['confusion'].copy()
    np.fill_diagonal(confusion, 0)
    flat = np.argsort(-confusion, axis=None, kind='stable')[:n]
    out = []
    for t, p in zip(*np.unravel_index(flat, confusion.shape)):
      if confusion[t, p] == 0:
        break
      out.append({'true': self.name(t), 'predicted': self.name(p),
                  'count': int(confusion[t, p]),
                  'fraction_of_true': float(confusion[t, p] / self.metrics['support'][t])})
    return out


def write(workdir: str, kind: str, step: int, report: Report) -> None:
  """<kind>_per_class.json and <kind>_predictions.jsonl in `workdir`."""
  fs.atomic_write(os.path.join(workdir, PER_CLASS_FILE.format(kind=kind)),
                  json.dumps(report.per_class_json(kind, step), indent=1))
  fs.atomic_write(os.path.join(workdir, PREDICTIONS_FILE.format(kind=kind)),
                  ''.join(json.dumps(l) + '\n' for l in report.named_lines()))


def plot_confusion(report: Report, path: str, title: str) -> None:
  """The row-normalised matrix; names on the axes up to MAX_LABELLED_CLASSES classes,
  above that the largest confusions listed beside it."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  m, n = report.metrics, report.num_classes
  rates = m['confusion'] / np.maximum(m['support'], 1)[:, None]
  labelled = n <= MAX_LABELLED_CLASSES
  side = min(4 + 0.3 * n, 16) if labelled else 9
  fig = plt.figure(figsize=(side if labelled else 17, side))
  ax = fig.add_axes([0.2, 0.2, 0.72, 0.72] if labelled else [0.05, 0.08, 0.45, 0.84])
  image = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label='fraction of the true class')
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(f'{title}: mean class accuracy {m["mean_class_accuracy"]:.3f}, '
               f'{len(report.lines)} videos', fontsize=10)
  if labelled:
    names = [report.name(c) for c in range(n)]
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
  if n <= MAX_ANNOTATED_CLASSES:
    for t in range(n):
      for p in range(n):
        if m['confusion'][t, p]:
          ax.text(p, t, str(m['confusion'][t, p]), ha='center', va='center', fontsize=8,
                  color='white' if rates[t, p] > 0.5 else 'black')
  if not labelled:
    rows = [f'{c["count"]:5d}  {c["fraction_of_true"]:6.1%}  {c["true"][:28]} -> '
            f'{c["predicted"][:28]}' for c in report.top_confusions(NUM_TOP_CONFUSIONS)]
    fig.text(0.55, 0.92, 'largest confusions (count, share of the true class, '
             'true -> predicted)', fontsize=9, va='top', weight='bold')
    fig.text(0.55, 0.89, '\n'.join(rows) or '(none)', fontsize=8, va='top',
             family='monospace')
  png = io.BytesIO()  # matplotlib writes local files only; fs writes URLs too
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  fs.atomic_write(path, png.getvalue())
