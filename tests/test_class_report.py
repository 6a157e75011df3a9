"""train_lib/class_report: per-class metrics against a hand computation, the detailed
step against the base steps on 4 devices, the files and the confusion picture."""

import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_adapter.train_lib import class_report, parallel, steps

# A known prediction set: 4 classes; class 3 has no example; one video of class 1 has
# non-finite scores (no prediction, -1).
LABELS = [0, 0, 0, 1, 1, 1, 1, 2, 2, 0]
PREDICTED = [0, 0, 2, 1, 0, -1, 1, 2, 1, 3]


def test_class_metrics_match_a_hand_computation():
  m = class_report.class_metrics(np.array(LABELS), np.array(PREDICTED), 4)
  # By hand: class 0: 4 videos, 2 right (predicted 0, 0, 2, 3); class 1: 4 videos, 2
  # right (1, 0, none, 1); class 2: 2 videos, 1 right (2, 1); class 3: none.
  np.testing.assert_array_equal(m['confusion'], [[2, 0, 1, 1],
                                                 [1, 2, 0, 0],
                                                 [0, 1, 1, 0],
                                                 [0, 0, 0, 0]])
  np.testing.assert_array_equal(m['support'], [4, 4, 2, 0])
  np.testing.assert_array_equal(m['correct'], [2, 2, 1, 0])
  np.testing.assert_array_equal(m['unscored'], [0, 1, 0, 0])
  np.testing.assert_allclose(m['per_class_accuracy'][:3], [0.5, 0.5, 0.5])
  assert np.isnan(m['per_class_accuracy'][3])
  assert m['mean_class_accuracy'] == pytest.approx((2 / 4 + 2 / 4 + 1 / 2) / 3)


def test_mean_class_accuracy_differs_from_top1_on_an_imbalanced_set():
  labels = np.array([0] * 8 + [1] * 2)
  predicted = np.array([0] * 8 + [0, 1])
  m = class_report.class_metrics(labels, predicted, 2)
  assert m['mean_class_accuracy'] == pytest.approx((8 / 8 + 1 / 2) / 2)  # 0.75
  assert np.mean(labels == predicted) == pytest.approx(0.9)


def _lines():
  lines = []
  for i, (label, pred) in enumerate(zip(LABELS, PREDICTED)):
    finite = pred >= 0
    top = [pred if finite else 0, (pred + 1) % 4]
    lines.append({'shard': f'test-{i % 2}', 'record': i // 2, 'label': label,
                  'top_k': [[c, (0.7 if j == 0 else 0.2) if finite else None]
                            for j, c in enumerate(top)],
                  'predicted': pred if finite else None})
  return lines


def test_report_files_name_classes_and_round_trip(tmp_path):
  names = ['wave', 'jump', 'run', 'sit']
  report = class_report.Report.from_lines(_lines(), 4, names)
  class_report.write(str(tmp_path), 'test', 12, report)
  with open(tmp_path / 'test_per_class.json') as f:
    saved = json.load(f)
  assert saved['labels'] == names and saved['count'] == len(LABELS) and saved['step'] == 12
  assert saved['confusion'] == report.metrics['confusion'].tolist()
  assert saved['mean_class_accuracy'] == pytest.approx(0.5)
  assert saved['per_class'][1] == {'index': 1, 'label': 'jump', 'support': 4, 'correct': 2,
                                   'accuracy': 0.5, 'unscored': 1}
  assert saved['per_class'][3]['accuracy'] is None
  # The largest off-diagonal cells, ties in row-major order.
  assert [(c['true'], c['predicted'], c['count']) for c in saved['top_confusions']] == [
      ('wave', 'run', 1), ('wave', 'sit', 1), ('jump', 'wave', 1), ('run', 'jump', 1)]
  with open(tmp_path / 'test_predictions.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == len(LABELS)
  assert rows[2] == {'shard': 'test-0', 'record': 1, 'label': 0, 'label_name': 'wave',
                     'top_k': [{'index': 2, 'label': 'run', 'score': 0.7},
                               {'index': 3, 'label': 'sit', 'score': 0.2}]}
  assert rows[5]['top_k'][0]['score'] is None  # non-finite: no score, no prediction


def _png_size(path):
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == b'\x89PNG\r\n\x1a\n'
  return struct.unpack('>II', head[16:24])


@pytest.mark.parametrize('num_classes', [12, 400])
def test_confusion_png_at_12_and_400_classes(tmp_path, num_classes):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, 3 * num_classes)
  # Mirrored pairs (2i <-> 2i+1) confused half the time, as SSv2's and ours are.
  predicted = np.where(rng.random(labels.size) < 0.5, labels ^ 1, labels)
  lines = [{'label': int(l), 'predicted': int(p), 'top_k': [[int(p), 0.5]]}
           for l, p in zip(labels, predicted)]
  report = class_report.Report.from_lines(lines, num_classes,
                                          [f'class name {i}' for i in range(num_classes)])
  path = str(tmp_path / 'confusion.png')
  class_report.plot_confusion(report, path, 'tiny test')
  width, height = _png_size(path)
  assert 400 <= width <= 1700 and 400 <= height <= 1600
  top = report.top_confusions(class_report.NUM_TOP_CONFUSIONS)
  assert top and all(c['true'].split()[-1] != c['predicted'].split()[-1] for c in top)
  assert all(int(c['true'].split()[-1]) ^ 1 == int(c['predicted'].split()[-1]) for c in top)
  assert [c['count'] for c in top] == sorted((c['count'] for c in top), reverse=True)


class _Linear:
  """A model with a known forward pass: logits = mean over (T, H, W) of pixels/255 @ w."""

  def apply(self, variables, inputs, train=False):
    del train
    pooled = jnp.mean(inputs.astype(jnp.float32) / 255, axis=(1, 2, 3))  # (B, 3)
    return pooled @ variables['params']['w']


@pytest.mark.parametrize('split', ['eval', 'test'])
def test_detailed_step_keeps_the_base_sums_and_gives_each_example_its_top_k(split):
  rng = np.random.default_rng(1)
  mesh = parallel.make_mesh()
  num_classes, b, views = 5, 8, 3
  shape = (b, views, 2, 2, 2, 3) if split == 'test' else (b, 2, 2, 2, 3)
  batch = {'inputs': rng.integers(0, 255, shape).astype(np.uint8),
           'label': rng.integers(0, num_classes, b).astype(np.int32),
           'batch_mask': np.array([1] * 6 + [0] * 2, np.float32)}
  params = {'w': (3 * rng.standard_normal((3, num_classes))).astype(np.float32)}
  base = ((lambda model: steps.make_eval_step(model, num_classes)) if split == 'eval'
          else steps.make_test_step)
  scores = ((lambda logits, batch: jax.nn.softmax(logits)) if split == 'eval'
            else lambda logits, batch: steps.view_probabilities(logits, b))
  step = class_report.make_detailed_step(base, scores, _Linear(), top_k=3)
  fn = jax.jit(step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
               out_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
  sums, per_example = fn(params, parallel.to_global(batch, mesh))
  want_sums = jax.jit(base(_Linear()))(params, batch)
  for k in want_sums:
    np.testing.assert_allclose(sums[k], want_sums[k], rtol=1e-5, err_msg=k)
  rows = class_report.local_rows(per_example)
  # Independent: numpy, float64, views averaged after the softmax.
  x = batch['inputs'].astype(np.float64) / 255
  logits = x.mean(axis=(-4, -3, -2)) @ params['w'].astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  if split == 'test':
    probs = probs.mean(axis=1)
  order = np.argsort(-probs, axis=-1, kind='stable')[:, :3]
  np.testing.assert_array_equal(rows['top_index'], order)
  np.testing.assert_allclose(rows['top_score'], np.take_along_axis(probs, order, -1),
                             rtol=1e-4)
  assert rows['finite'].all()
  lines = class_report.video_lines(rows, batch, {
      'shard': np.array([f's{i}' for i in range(b)], object), 'record': np.arange(b)})
  assert [l['record'] for l in lines] == list(range(6))  # padding rows left out
  assert [l['predicted'] for l in lines] == list(order[:6, 0])
