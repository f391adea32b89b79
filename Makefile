# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv from the pinned requirements first (once; again when they change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# No machine here reaches the Hugging Face hub: every load is local, never a network retry.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup setup-gpu browser lint demo test test-fast clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-pylate.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-pylate.txt
	touch $@

# On a GPU machine: the CPU install plus the fused MaxSim kernels (requirements-gpu.txt).
setup-gpu: setup
	$(BIN)/pip install --quiet --no-deps -r requirements-gpu.txt

# The whole pipeline on the embedded demo, then the HTML report.
demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --configfile demo/config.yaml --cores all --rerun-incomplete
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --configfile demo/config.yaml --report report.html
	@echo "summary: results/demo/summary.md   report: report.html"
	@cat results/demo/summary.md

# Headless Chromium + its driver for the report test (Debian packages; needs root).
browser:
	command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The formatters own the layout; the linters and Snakemake's own lint pass (before any test runs).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint --configfile demo/config.yaml

# Every test, the Slurm ones on a local two-node cluster started for them.
test: setup browser lint
	bash tests/slurm/start-local-slurm.sh
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

# Without the Slurm and end-to-end tests (a quick loop while developing).
test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not slurm and not e2e"

clean-demo:
	rm -rf results/demo resources/demo resources/sources .snakemake report.html
