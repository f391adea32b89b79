#!/usr/bin/env bash
# Runs inside the new env; REASON_COLBERT_REPO is exported by rules/common.smk.
set -euo pipefail
pip install -r "$REASON_COLBERT_REPO/requirements.txt"
pip install --no-deps -r "$REASON_COLBERT_REPO/requirements-pylate.txt"
# GPU-only extras (fused MaxSim kernels); a CPU install (`make setup`) skips them.
pip install --no-deps -r "$REASON_COLBERT_REPO/requirements-gpu.txt"
