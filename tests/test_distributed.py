"""vivit_adapter.distributed: when to join a multi-process run, and joining one on CPU."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import pytest

from tests import trainer_utils as tu
from vivit_adapter import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('environ, expected', [
    ({}, False),
    ({'TPU_WORKER_HOSTNAMES': 'localhost'}, False),  # a single-host TPU VM
    ({'TPU_WORKER_HOSTNAMES': 't1,t2'}, True),
    ({'CLOUD_TPU_TASK_ID': '0'}, True),
    ({'MEGASCALE_COORDINATOR_ADDRESS': '10.0.0.1:8080'}, True),
    ({'CLOUD_TPU_TASK_ID': ''}, False),
])
def test_is_multihost_tpu(environ, expected):
  assert distributed.is_multihost_tpu(environ) is expected


def test_single_process_does_nothing():
  assert distributed.initialize(environ={}) is False


def test_this_cpu_machine_is_not_a_cloud_tpu_vm():
  assert distributed.on_cloud_tpu_vm() is False


def test_a_cloud_tpu_vm_lets_jax_read_the_slice_from_its_metadata(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  assert distributed.initialize(environ={}, tpu_vm=False) is False
  assert calls == []
  assert distributed.initialize(environ={}, tpu_vm=True) is True
  assert calls == [{}]  # no arguments: jax detects coordinator, count and id itself


@pytest.mark.parametrize('kwargs, message', [
    ({'coordinator_address': 'h:1'}, 'must be given together'),
    ({'num_processes': 2}, 'must be given together'),
    ({'coordinator_address': 'h:1', 'num_processes': 2, 'process_id': 2},
     r'--process_id=2 must lie in \[0, --num_processes=2\)'),
])
def test_flag_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize(environ={}, **kwargs)


CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    from vivit_adapter import distributed
    assert distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), environ={})
    import jax
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(np.array([10 + jax.process_index()]))
    # To a file, not stdout: Gloo's C++ logging writes to stdout too and can land inside
    # a printed line.
    with open(sys.argv[3], 'w') as f:
      f.write(f'RESULT {jax.process_index()} {jax.process_count()} {jax.device_count()} '
              f'{gathered.ravel().tolist()}')
''')


def test_two_cpu_processes_see_each_other(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=tu.xla_flags(2))
  procs = [subprocess.Popen([sys.executable, '-c', CHILD, f'127.0.0.1:{port}', str(i),
                             str(tmp_path / f'result{i}')],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  results = sorted((tmp_path / f'result{i}').read_text() for i in range(2))
  assert results == ['RESULT 0 2 4 [10, 11]', 'RESULT 1 2 4 [10, 11]']
