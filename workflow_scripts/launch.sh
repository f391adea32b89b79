#!/usr/bin/env bash
# Start a training command once per device.
#
# Inside a Slurm allocation with several tasks (the training rule's `nodes` x `tasks_per_node`,
# see slurm/config.yaml) this runs `srun` to start one task per GPU on every node, and each
# task maps Slurm's ids to the variables torch.distributed / the HF Trainer read:
#   RANK=SLURM_PROCID  LOCAL_RANK=SLURM_LOCALID  WORLD_SIZE=SLURM_NTASKS
#   MASTER_ADDR=first node of the allocation  MASTER_PORT=derived from the job id
# Anywhere else (a laptop, the demo, a single-task job) it runs the command directly.
set -euo pipefail

if [[ "${1:-}" == "--task" ]]; then
    shift
    export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"
    exec "$@"
fi

if [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
    first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
    export MASTER_ADDR="${MASTER_ADDR:-$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')}"
    export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
    echo "launch: srun ${SLURM_NTASKS} tasks on ${SLURM_JOB_NODELIST}, master ${MASTER_ADDR}:${MASTER_PORT}" >&2
    exec srun --kill-on-bad-exit=1 --ntasks="$SLURM_NTASKS" bash "$0" --task "$@"
fi

exec "$@"
