"""Losses, mixup and accuracy counts."""

import jax
import jax.numpy as jnp


def one_hot_targets(labels, num_classes: int, label_smoothing: float = 0.0):
  """One-hot targets with label smoothing spread uniformly over all classes."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return targets


def mixup(rng, inputs, targets, alpha: float):
  """Mixes each example with the batch reversed, with one Beta(alpha, alpha) weight."""
  lam = jax.random.beta(rng, alpha, alpha)
  mixed_inputs = lam * inputs + (1.0 - lam) * inputs[::-1]
  mixed_targets = lam * targets + (1.0 - lam) * targets[::-1]
  return mixed_inputs, mixed_targets


def weighted_cross_entropy(logits, targets, weights):
  """Sum over examples of weight * cross-entropy(logits, soft targets)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return jnp.sum(-jnp.sum(targets * logp, axis=-1) * weights)


def topk_correct(scores, labels, k: int, weights):
  """Weighted count of examples whose label is among the k highest scores."""
  k = min(k, scores.shape[-1])
  label_score = jnp.take_along_axis(scores, labels[:, None], axis=-1)
  # Rank of the label among the classes, ties broken by class index as argmax/top_k
  # do: an all-equal score vector (a zero-initialised head) is not 'all correct'.
  classes = jnp.arange(scores.shape[-1])
  ahead = (scores > label_score) | ((scores == label_score) & (classes < labels[:, None]))
  rank = jnp.sum(ahead, axis=-1)
  # NaN compares false with everything, so a NaN row would rank every label first.
  finite = jnp.all(jnp.isfinite(scores), axis=-1)
  return jnp.sum(((rank < k) & finite) * weights)


def nonfinite_count(scores, weights):
  """Weighted count of examples with a NaN or infinite score (they are never correct)."""
  return jnp.sum(jnp.any(~jnp.isfinite(scores), axis=-1) * weights)
