#!/usr/bin/env bash
# Runs inside the new env; REASON_COLBERT_REPO is exported by rules/common.smk.
set -euo pipefail
pip install -r "$REASON_COLBERT_REPO/requirements.txt"
pip install --no-deps -r "$REASON_COLBERT_REPO/requirements-pylate.txt"
