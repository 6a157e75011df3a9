"""Data parallelism: one mesh axis over all devices of all processes.

Parameters and optimizer state are replicated; batches are split along their first
axis. Each process feeds only its own slice of the global batch
(`jax.make_array_from_process_local_data`).
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  # Auto axes: XLA propagates shardings through the model; the model code stays
  # free of sharding annotations.
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def per_process_batch_size(global_batch: int, what: str = 'config.batch_size') -> int:
  """The slice of the global batch that this process loads."""
  devices, processes = jax.device_count(), jax.process_count()
  if global_batch % devices:
    raise ValueError(f'{what}={global_batch} must be divisible by the number of devices '
                     f'({devices}) for data parallelism.')
  return global_batch // processes


def to_global(local_batch, mesh):
  """Host-local numpy batch -> global jax.Arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicate(tree, mesh):
  """Places a host tree (identical on every process) on all devices."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), np.shape(x)), tree)
