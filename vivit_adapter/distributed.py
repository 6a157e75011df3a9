"""Joining a multi-process JAX run: explicit coordinator, Cloud TPU, or single process.

`initialize` must run before anything touches a JAX device (even `jax.devices()`), so
the CLI calls it first and the multi-process trainer tests call it in each child.
"""

import os
from typing import Mapping, Optional

from absl import flags
from absl import logging

# Variables that Cloud TPU VMs set when a slice spans several hosts; jax then finds the
# coordinator and this host's id by itself.
_TPU_MULTIHOST_VARS = ('MEGASCALE_COORDINATOR_ADDRESS', 'CLOUD_TPU_TASK_ID')


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--coordinator_address, --num_processes and --process_id, for the programs that
  run over several processes (defaults from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID)."""
  flags.DEFINE_string(
      'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS', ''),
      "Process 0's host:port, for a run over several processes.", flag_values=flag_values)
  flags.DEFINE_integer(
      'num_processes', int(os.environ.get('JAX_NUM_PROCESSES', '0')),
      'Processes in the run.', flag_values=flag_values)
  flags.DEFINE_integer(
      'process_id', int(os.environ.get('JAX_PROCESS_ID', '-1')), "This process's index.",
      flag_values=flag_values)


def initialize_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """`initialize` with the values of the flags `define_flags` defined."""
  return initialize(flag_values.coordinator_address, flag_values.num_processes,
                    flag_values.process_id)


def is_multihost_tpu(environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether the environment describes a TPU slice with several hosts."""
  environ = os.environ if environ is None else environ
  hostnames = [h for h in environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h.strip()]
  return len(hostnames) > 1 or any(environ.get(v) for v in _TPU_MULTIHOST_VARS)


def on_cloud_tpu_vm() -> bool:
  """Whether this is a Cloud TPU VM: libtpu installed and TPU chips on the PCI bus.

  A TPU VM created with `gcloud compute tpus tpu-vm create` keeps its slice's worker list
  in the VM metadata, not in the environment, so `is_multihost_tpu` cannot see it; jax
  checks for the chips when it is imported and reads the metadata in
  `jax.distributed.initialize()`. The flag is jax's own (private, pinned version).
  """
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  return bool(getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False))


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1, environ: Optional[Mapping[str, str]] = None,
               tpu_vm: Optional[bool] = None) -> bool:
  """Calls `jax.distributed.initialize` when this is one process of several.

  Args:
    coordinator_address: 'host:port' of process 0; with `num_processes` > 1 and
      `process_id`, the processes are told explicitly (GPU clusters, CPU tests).
    num_processes: the number of processes; <= 1 means a single-process run.
    process_id: this process's index in [0, num_processes).
    environ: the environment to inspect (tests); defaults to os.environ.
    tpu_vm: whether this is a Cloud TPU VM (tests); defaults to `on_cloud_tpu_vm()`.

  Returns:
    True when jax.distributed was initialised.
  """
  # Imported here: the programs define these flags before --help, which must not wait for JAX.
  import jax  # pylint: disable=g-import-not-at-top
  if coordinator_address and num_processes > 1:
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id={process_id} must lie in [0, --num_processes='
                       f'{num_processes}) when --coordinator_address is given.')
    # CPU processes exchange collectives over gloo; this must be set before initialize
    # and does nothing on GPU/TPU backends.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    logging.info('jax.distributed: process %d of %d, coordinator %s', process_id,
                 num_processes, coordinator_address)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  if coordinator_address or num_processes > 1:
    raise ValueError(
        f'--coordinator_address={coordinator_address!r} and --num_processes={num_processes}'
        ' must be given together (with --process_id) for a multi-process run.')
  tpu_vm = on_cloud_tpu_vm() if tpu_vm is None else tpu_vm
  if is_multihost_tpu(environ) or tpu_vm:
    # jax finds the coordinator (worker 0), the process count and this host's id in the
    # environment or the TPU VM metadata; on a one-host TPU VM that is one process.
    logging.info('jax.distributed: Cloud TPU detected, initialising from its environment')
    jax.distributed.initialize()
    return True
  return False


def log_topology() -> None:
  """Logs the processes and devices this run sees (after `initialize`)."""
  import jax  # pylint: disable=g-import-not-at-top
  logging.info('JAX %s: process %d of %d; %d local / %d global devices: %s',
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.local_devices())
