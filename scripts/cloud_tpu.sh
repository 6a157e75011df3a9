#!/usr/bin/env bash
# One experiment as a Cloud TPU batch job: a TPU VM slice, data and workdir on gs://.
#
#   export TPU_NAME=vivit-k400 ZONE=us-central2-b ACCELERATOR=v4-32 PROJECT=my-project
#   export WORKDIR=gs://my-bucket/runs/k400_stage2_f64
#   scripts/cloud_tpu.sh run --config=experiments/k400_stage2.py \
#       --config.dataset.base_dir=gs://my-bucket/k400 \
#       --config.init_from.checkpoint_path=gs://my-bucket/runs/k400_stage1
#
# run ARGS...    until WORKDIR/summary.json exists: create the slice if it is missing or
#                was preempted, install this checkout on every worker, train on every
#                worker. Every start resumes from WORKDIR/checkpoints (the trainer does).
#                A run that fails on a healthy slice is not retried.
# create | install | train ARGS... | logs [WORKER] | delete    the steps one at a time.
# TensorBoard:   tensorboard --logdir="$WORKDIR" (anywhere with access to the bucket).
#
# Settings (environment): TPU_NAME, ZONE, WORKDIR (required); PROJECT; ACCELERATOR
# (v4-32); RUNTIME (tpu-ubuntu2204-base); SPOT (1: a preemptible spot slice);
# MAX_STARTS (20); RETRY_SECONDS (60).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://...)}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
SPOT="${SPOT:-1}"
MAX_STARTS="${MAX_STARTS:-20}"
RETRY_SECONDS="${RETRY_SECONDS:-60}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
REMOTE_DIR=vivit_adapter  # in each worker's home directory

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}; }
on_all_workers() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }
state() { tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null || echo MISSING; }
finished() { gcloud storage ls "$WORKDIR/summary.json" >/dev/null 2>&1; }

create() {
  case "$(state)" in
    READY) return 0 ;;
    MISSING) ;;
    # A preempted spot slice does not come back: delete it and create a new one.
    *) tpu delete "$TPU_NAME" --quiet ;;
  esac
  local spot=()
  if [ "$SPOT" = 1 ]; then spot=(--spot); fi
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot[@]}"
}

install() {
  # The committed checkout (git archive HEAD), installed with the TPU runtime (libtpu).
  local archive
  archive="$(mktemp -d)/vivit_adapter.tar.gz"
  git -C "$REPO" archive --format=tar.gz -o "$archive" HEAD
  tpu scp "$archive" "$TPU_NAME:vivit_adapter.tar.gz" --worker=all
  on_all_workers "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && \
    tar -xzf ~/vivit_adapter.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR && \
    python3 -m pip install -q -e '.[tpu]'"
}

train() {
  # The same command on every worker: jax.distributed reads worker 0's address and this
  # worker's index from the TPU VM metadata. Each worker logs to ~/train.log, copied to
  # WORKDIR/logs/<worker host>.log when the command ends.
  local args workdir
  args="$(printf ' %q' "$@")"
  workdir="$(printf '%q' "$WORKDIR")"
  on_all_workers "cd ~/$REMOTE_DIR && \
    python3 -m vivit_adapter.main --workdir=$workdir$args 2>&1 | tee -a ~/train.log; \
    status=\${PIPESTATUS[0]}; \
    gcloud storage cp ~/train.log $workdir/logs/\$(hostname).log >/dev/null 2>&1; \
    exit \$status"
}

run() {
  local start status
  for ((start = 1; start <= MAX_STARTS; start++)); do
    if finished; then
      echo "$WORKDIR/summary.json exists: the run is complete."
      return 0
    fi
    create
    install
    status=0
    train "$@" || status=$?
    if finished; then continue; fi
    # 75 (EX_TEMPFAIL): the program was stopped by SIGTERM (a maintenance event on a
    # healthy slice) after saving a checkpoint: start again. Any other failure on a
    # healthy slice is the run's own (docs/training.md, "Errors and exit codes"): stop.
    if [ "$status" -ne 0 ] && [ "$status" -ne 75 ] && [ "$(state)" = READY ]; then
      echo "Training failed on a healthy slice (exit $status); see $WORKDIR/logs/." >&2
      return "$status"
    fi
    echo "Start $start ended before the run finished (slice: $(state)); again in" \
         "${RETRY_SECONDS}s, resuming from $WORKDIR/checkpoints." >&2
    sleep "$RETRY_SECONDS"
  done
  echo "Gave up after $MAX_STARTS starts; $WORKDIR keeps the checkpoints." >&2
  return 1
}

command="${1:-}"
shift || true
case "$command" in
  run) run "$@" ;;
  create) create ;;
  install) install ;;
  train) train "$@" ;;
  logs) tpu ssh "$TPU_NAME" --worker="${1:-0}" --command='tail -n 200 -f ~/train.log' ;;
  delete) tpu delete "$TPU_NAME" --quiet ;;
  *) echo "usage: $0 run|create|install|train|logs|delete [ARGS...]" >&2; exit 2 ;;
esac
