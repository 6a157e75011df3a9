"""Test set-up shared by every test file."""

import os

# Several CPU devices for sharding tests; must be set before jax is imported.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
