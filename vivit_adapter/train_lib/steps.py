"""Pure train / eval / test step functions.

`make_*_step` close over the static pieces (model, optimizer, frozen names); the
returned functions take only arrays, so the trainer (and the benchmark) jit them with
shardings and donation.
"""

from typing import Any, Callable, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from vivit_adapter.train_lib import losses
from vivit_adapter.train_lib import optimizers


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray  # int32 scalar: optimizer updates done
  params: Dict[str, Any]
  opt_state: Any
  rng: jnp.ndarray  # base key; the key of step s is fold_in(rng, s)


def _micro_batches(x, k: int):
  """(B, ...) -> (k, B/k, ...) keeping each device's contiguous rows on that device."""
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)


def make_train_step(model, tx: optax.GradientTransformation, schedule: Callable, *,
                    frozen: Tuple[str, ...], num_classes: int,
                    label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
                    accumulation_steps: int = 1):
  """Returns `train_step(state, batch) -> (state, metrics)`.

  Gradients are taken with respect to the trainable parameters only: the frozen
  ones enter the loss as constants, so no backward pass is built for them.
  `accumulation_steps` > 1 splits the batch into micro-batches whose gradients are
  averaged (a `lax.scan`), trading step time for activation memory.
  """

  def loss_fn(trainable, fixed, inputs, labels, rng):
    drop_rng, mix_rng = jax.random.split(rng)
    targets = losses.one_hot_targets(labels, num_classes, label_smoothing)
    if mixup_alpha > 0:
      inputs, targets = losses.mixup(mix_rng, inputs, targets, mixup_alpha)
    logits = model.apply({'params': optimizers.merge_params(trainable, fixed)}, inputs,
                         train=True,
                         rngs={'dropout': drop_rng})
    ones = jnp.ones(labels.shape, jnp.float32)
    loss = losses.weighted_cross_entropy(logits, targets, ones) / labels.shape[0]
    return loss, losses.topk_correct(logits, labels, 1, ones)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def gradients(trainable, fixed, batch, rng):
    if accumulation_steps == 1:
      return grad_fn(trainable, fixed, batch['inputs'], batch['label'], rng)
    xs = (_micro_batches(batch['inputs'], accumulation_steps),
          _micro_batches(batch['label'], accumulation_steps),
          jnp.arange(accumulation_steps))

    def body(acc, x):
      inputs, labels, i = x
      (loss, correct), g = grad_fn(trainable, fixed, inputs, labels, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, acc, ((loss, correct), g)), None

    zeros = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, trainable))
    ((loss, correct), grads), _ = jax.lax.scan(body, zeros, xs)
    scale = 1.0 / accumulation_steps
    return (loss * scale, correct), jax.tree.map(lambda g: g * scale, grads)

  def train_step(state: TrainState, batch) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    rng = jax.random.fold_in(state.rng, state.step)
    trainable, fixed = optimizers.split_params(state.params, frozen)
    (loss, correct), grads = gradients(trainable, fixed, batch, rng)
    # The frozen branch of the optimizer is set_to_zero and its updates are never
    # applied, so these zeros are dead code that XLA removes.
    full_grads = optimizers.merge_params(grads, jax.tree.map(jnp.zeros_like, fixed))
    updates, opt_state = tx.update(full_grads, state.opt_state, state.params)
    new_trainable = optax.apply_updates(
        trainable, optimizers.split_params(updates, frozen)[0])
    new_state = state.replace(step=state.step + 1,
                              params=optimizers.merge_params(fixed, new_trainable),
                              opt_state=opt_state)
    metrics = {'loss': loss, 'accuracy': correct / batch['label'].shape[0],
               'grad_norm': optax.tree.norm(grads),
               'learning_rate': schedule(state.step)}
    return new_state, metrics

  return train_step


def make_train_step_from_config(config, model, tx: optax.GradientTransformation,
                                schedule: Callable, *, frozen: Tuple[str, ...],
                                num_classes: int):
  """`make_train_step` with the loss settings read from `config` (label smoothing,
  mixup, gradient accumulation): the step factory `assembly.build` uses by default,
  for the trainer and the benchmarks alike."""
  return make_train_step(model, tx, schedule, frozen=frozen, num_classes=num_classes,
                         label_smoothing=config.label_smoothing,
                         mixup_alpha=config.mixup.alpha,
                         accumulation_steps=config.gradient_accumulation_steps)


def make_eval_step(model, num_classes: int):
  """Returns `eval_step(params, batch) -> sums` over the examples with batch_mask 1."""

  def eval_step(params, batch):
    logits = model.apply({'params': params}, batch['inputs'], train=False)
    w = batch['batch_mask']
    targets = losses.one_hot_targets(batch['label'], num_classes)
    return {'loss': losses.weighted_cross_entropy(logits, targets, w),
            'top1': losses.topk_correct(logits, batch['label'], 1, w),
            'top5': losses.topk_correct(logits, batch['label'], 5, w),
            'nonfinite': losses.nonfinite_count(logits, w),
            'count': jnp.sum(w)}

  return eval_step


def view_probabilities(logits, num_videos: int):
  """(num_videos * V, classes) logits, V views per video in a row -> (num_videos, classes)
  class probabilities averaged over each video's views: the multi-view test's rule,
  which `predict` applies too."""
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return probs.reshape(num_videos, -1, probs.shape[-1]).mean(axis=1)


def make_test_step(model):
  """Multi-view test: inputs (B, V, T, H, W, 3); class probabilities averaged per video."""

  def test_step(params, batch):
    inputs = batch['inputs']
    b, v = inputs.shape[:2]
    logits = model.apply({'params': params}, inputs.reshape((b * v,) + inputs.shape[2:]),
                         train=False)
    probs = view_probabilities(logits, b)
    w = batch['batch_mask']
    return {'top1': losses.topk_correct(probs, batch['label'], 1, w),
            'top5': losses.topk_correct(probs, batch['label'], 5, w),
            'nonfinite': losses.nonfinite_count(probs, w),
            'count': jnp.sum(w)}

  return test_step
