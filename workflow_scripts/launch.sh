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

# The Snakemake jobstep strips SLURM_* except the job id before running a rule, so the
# allocation's shape is read back from scontrol rather than from SLURM_NTASKS.
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    job=$(scontrol show job -o "$SLURM_JOB_ID")
    field() { grep -o " $1=[^ ]*" <<<"$job" | head -n1 | cut -d= -f2; }
    ntasks=$(field NumTasks)
    if [[ "${ntasks:-1}" -gt 1 ]]; then
        nodes=$(field NumNodes)
        first_node=$(scontrol show hostnames "$(field NodeList)" | head -n1)
        export MASTER_ADDR="${MASTER_ADDR:-$(scontrol show node -o "$first_node" | grep -o ' NodeAddr=[^ ]*' | cut -d= -f2)}"
        export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
        echo "launch: srun $ntasks tasks on $nodes node(s) $(field NodeList), master $MASTER_ADDR:$MASTER_PORT" >&2
        exec srun --jobid="$SLURM_JOB_ID" --nodes="$nodes" --ntasks="$ntasks" --kill-on-bad-exit=1 \
            bash "$0" --task "$@"
    fi
fi

exec "$@"
