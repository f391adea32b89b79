"""This process's place in the job: rank and world size from the launcher, and its device (never a silent CPU)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from ..errors import UserError

__all__ = ["requested_gpus", "training_device", "world_info"]

# Values of CUDA_VISIBLE_DEVICES that name no device (Slurm writes NoDevFiles without GPU gres).
_NO_DEVICES = {"", "-1", "none", "nodevfiles"}


def world_info() -> dict[str, Any]:
    """Rank layout of this process (torchrun/accelerate or srun via launch.sh, else single)."""
    return {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "hostname": socket.gethostname(),
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def requested_gpus(environ: Mapping[str, str]) -> int:
    """How many GPUs this process's job was given, from what Slurm and CUDA set.

    ``CUDA_VISIBLE_DEVICES`` (set by Slurm's GPU gres, or by the user) wins; a Slurm step's own
    ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS`` count where it is absent. Zero when nothing asks.

    Parameters
    ----------
    environ
        The process environment.

    Examples
    --------
    >>> requested_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    4
    >>> requested_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_JOB_GPUS": "0"})
    0
    >>> requested_gpus({"SLURM_STEP_GPUS": "2"})
    1
    >>> requested_gpus({})
    0
    """
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if name in environ:
            value = environ[name].strip()
            return 0 if value.lower() in _NO_DEVICES else len([v for v in value.split(",") if v.strip()])
    return 0


def training_device(*, local_rank: int, environ: Mapping[str, str] | None = None) -> str:
    """The device this rank trains on, refusing to fall back to the CPU behind the user's back.

    ``cuda:<local rank>`` where torch can use CUDA; ``cpu`` where it cannot and the job was given
    no GPU. A job that was given GPUs torch cannot use (a CPU build of torch, a CUDA build newer
    than the node's driver, too few visible devices for the node's ranks) is refused in one line:
    without this, the Trainer silently trains on CPU with gloo for days.

    Parameters
    ----------
    local_rank
        This process's rank on its node (``LOCAL_RANK``).
    environ
        The process environment (default: ``os.environ``).
    """
    import torch

    environ = os.environ if environ is None else environ
    asked = requested_gpus(environ)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    where = f"CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
    build = f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none: a CPU build'})"
    if asked and not visible:
        raise UserError(
            f"train: this job was given {asked} GPU(s) ({where}) but {build} cannot use any "
            "(CPU build, or a CUDA build the node's driver does not support); refusing to train on CPU"
        )
    if not visible:
        return "cpu"
    if local_rank >= visible:
        raise UserError(
            f"train: local rank {local_rank} has no GPU of its own: {visible} visible ({where}); "
            "give each node as many GPUs as tasks (train.gpus_per_node)"
        )
    return f"cuda:{local_rank}"
