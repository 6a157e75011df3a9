"""scripts/cloud_tpu.sh against a stand-in `gcloud` that records its calls.

No network: the stand-in plays a spot slice that is preempted during the first training
start, so `run` must recreate it, install again and start the same command again, until
the workdir has summary.json.
"""

import os
import subprocess

from tests import trainer_utils as tu

SCRIPT = os.path.join(tu.REPO, 'scripts', 'cloud_tpu.sh')

# $FAKE/state holds the slice's state (absent: no slice); $FAKE/summary stands for
# WORKDIR/summary.json; $FAKE/train_outcomes lists what each training start does.
FAKE_GCLOUD = r'''#!/usr/bin/env bash
echo "$*" >> "$FAKE/calls"
case "$*" in
  *"tpu-vm describe"*) [ -f "$FAKE/state" ] && cat "$FAKE/state" || exit 1 ;;
  *"tpu-vm create"*) echo READY > "$FAKE/state" ;;
  *"tpu-vm delete"*) rm -f "$FAKE/state" ;;
  *"storage ls"*) [ -f "$FAKE/summary" ] ;;
  *"tpu-vm ssh"*vivit_adapter.main*)
    outcome="$(head -n 1 "$FAKE/train_outcomes")"; sed -i 1d "$FAKE/train_outcomes"
    case "$outcome" in
      preempted) echo PREEMPTED > "$FAKE/state"; exit 255 ;;
      failed) exit 1 ;;
      sigterm) exit 75 ;;
      finished) touch "$FAKE/summary" ;;
    esac ;;
esac
'''

ARGS = ('--config=experiments/k400_stage2.py', '--config.dataset.base_dir=gs://b/k400')


def _run(tmp_path, outcomes):
  fake = tmp_path / 'fake'
  (fake / 'bin').mkdir(parents=True)
  (fake / 'bin' / 'gcloud').write_text(FAKE_GCLOUD)
  (fake / 'bin' / 'gcloud').chmod(0o755)
  (fake / 'train_outcomes').write_text(''.join(o + '\n' for o in outcomes))
  env = dict(os.environ, PATH=f'{fake / "bin"}:{os.environ["PATH"]}', FAKE=str(fake),
             TPU_NAME='vivit', ZONE='us-central2-b', WORKDIR='gs://b/runs/x',
             RETRY_SECONDS='0')
  proc = subprocess.run(['bash', SCRIPT, 'run', *ARGS], env=env, capture_output=True,
                        text=True, timeout=120)
  calls = (fake / 'calls').read_text().splitlines()
  return proc, [c.split(' --zone')[0] for c in calls]


def test_a_preempted_slice_is_recreated_and_the_same_run_started_again(tmp_path):
  proc, calls = _run(tmp_path, ['preempted', 'finished'])
  assert proc.returncode == 0, proc.stderr
  kinds = [' '.join(c.split()[:4]) for c in calls]
  assert kinds == [
      'storage ls gs://b/runs/x/summary.json',
      'compute tpus tpu-vm describe', 'compute tpus tpu-vm create',
      'compute tpus tpu-vm scp', 'compute tpus tpu-vm ssh', 'compute tpus tpu-vm ssh',
      'storage ls gs://b/runs/x/summary.json', 'compute tpus tpu-vm describe',
      'compute tpus tpu-vm describe', 'storage ls gs://b/runs/x/summary.json',
      'compute tpus tpu-vm describe', 'compute tpus tpu-vm delete',
      'compute tpus tpu-vm create',
      'compute tpus tpu-vm scp', 'compute tpus tpu-vm ssh', 'compute tpus tpu-vm ssh',
      'storage ls gs://b/runs/x/summary.json', 'storage ls gs://b/runs/x/summary.json']
  assert 'vivit --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot' in calls[2]
  trains = [c for c in calls if 'vivit_adapter.main' in c]
  assert len(trains) == 2 and trains[0] == trains[1]
  assert '--worker=all' in trains[0]
  assert ('python3 -m vivit_adapter.main --workdir=gs://b/runs/x '
          '--config=experiments/k400_stage2.py --config.dataset.base_dir=gs://b/k400') in trains[0]
  assert "pip install -q -e '.[tpu]'" in calls[4] and '--worker=all' in calls[4]
  assert 'resuming from gs://b/runs/x/checkpoints' in proc.stderr
  assert 'the run is complete' in proc.stdout


def test_a_run_stopped_by_sigterm_on_a_healthy_slice_is_started_again(tmp_path):
  # exit 75: the program saved a checkpoint and asks to be requeued.
  proc, calls = _run(tmp_path, ['sigterm', 'finished'])
  assert proc.returncode == 0, proc.stderr
  assert len([c for c in calls if 'vivit_adapter.main' in c]) == 2
  assert 'resuming from gs://b/runs/x/checkpoints' in proc.stderr


def test_a_run_that_fails_on_a_healthy_slice_is_not_retried(tmp_path):
  proc, calls = _run(tmp_path, ['failed', 'finished'])
  assert proc.returncode == 1
  assert 'Training failed on a healthy slice (exit 1)' in proc.stderr
  assert len([c for c in calls if 'vivit_adapter.main' in c]) == 1
