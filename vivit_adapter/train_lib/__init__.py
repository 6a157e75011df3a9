"""Training: optimizer, train/eval steps, checkpoints, the loop."""
