"""What a run reports: metrics (console, TensorBoard), their history, summary.json and a
PNG of the training curves.

All of them live in the workdir, a local path or a URL (gs://), written through
`data_pipelines.fs` or TensorFlow's summary writer (the same file system layer).
"""

import io
import json
import os
from typing import Any, Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from data_pipelines import fs  # pylint: disable=g-import-not-at-top
from data_pipelines import tf_runtime  # pylint: disable=g-import-not-at-top

metric_writers = tf_runtime.import_library('clu.metric_writers')

SUMMARY_FILE = 'summary.json'
CURVES_FILE = 'training_curves.png'
HISTORY_FILE = 'history.jsonl'


def metric_writer(workdir: str, is_main: bool) -> metric_writers.MetricWriter:
  """Console metrics on every process; TensorBoard events in `workdir` from process 0.

  clu's create_default_writer, built here because that passes the directory through
  etils.epath, which knows only some URL schemes; tf.summary takes every path that
  tf.io.gfile does.
  """
  writers = [metric_writers.LoggingWriter()]
  if is_main:
    writers.append(metric_writers.SummaryWriter(workdir))
  return metric_writers.AsyncMultiWriter(writers)


class History:
  """Appends {'step', 'kind', metrics...} rows to WORKDIR/history.jsonl.

  The file survives restarts, so a resumed run's curves cover the whole run.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, HISTORY_FILE)
    self.enabled = enabled

  def add(self, step: int, kind: str, metrics: Dict[str, float]) -> None:
    if not self.enabled:
      return
    # On gs:// an append re-uploads the object (objects are immutable); a history
    # is one short line per logged step, so that stays cheap.
    with fs.open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), 'kind': kind,
                          **{k: float(v) for k, v in metrics.items()}}) + '\n')

  def rows(self, kind: str, up_to_step: int = None) -> List[Dict[str, float]]:
    if not fs.exists(self.path):
      return []
    with fs.open(self.path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    # A resumed run repeats steps after its last checkpoint; keep the latest row.
    by_step = {}
    for r in rows:
      if r['kind'] == kind and (up_to_step is None or r['step'] <= up_to_step):
        by_step[r['step']] = r
    return [by_step[s] for s in sorted(by_step)]


def plot_curves(history: History, path: str, title: str) -> None:
  train, evals = history.rows('train'), history.rows('eval')
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  if train:
    axes[0].plot([r['step'] for r in train], [r['loss'] for r in train], label='train loss')
  if evals:
    axes[0].plot([r['step'] for r in evals], [r['loss'] for r in evals], 'o-', label='eval loss')
  axes[0].set_xlabel('step')
  axes[0].legend()
  if train:
    axes[1].plot([r['step'] for r in train], [r['accuracy'] for r in train], label='train top-1')
  if evals:
    axes[1].plot([r['step'] for r in evals], [r['top1'] for r in evals], 'o-', label='eval top-1')
    axes[1].plot([r['step'] for r in evals], [r['top5'] for r in evals], 's--', label='eval top-5')
  axes[1].set_xlabel('step')
  axes[1].set_ylim(0, 1)
  axes[1].legend()
  fig.suptitle(title)
  fig.tight_layout()
  png = io.BytesIO()  # matplotlib writes local files only; fs writes URLs too
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  fs.atomic_write(path, png.getvalue())


def write_summary(workdir: str, summary: Dict[str, Any]) -> str:
  path = os.path.join(workdir, SUMMARY_FILE)
  fs.atomic_write(path, json.dumps(summary, indent=2, sort_keys=True, default=str))
  return path
