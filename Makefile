# make demo  — fresh machine: create .venv, install, run the whole chain on a generated synthetic ADNI download
# make test  — fresh machine: create .venv if missing, run the test suite (the command .ci/run calls)
# make test-fast — the unit tests only (not marked slow or slurm): a few minutes on 2 cores
# make lint  — ruff (lint + format check), snakefmt --check, snakemake --lint; make format applies the style
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast lint format dryrun report containers clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the pinned files (a plain 'torch' would pull another build)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/demo
	$(BIN)/snakemake --profile profiles/demo --report demo/report.html
	@echo
	@echo "Demo outputs are under demo/: raw/ (synthetic download), bids/ (clinica), tables/ (sessions, splits),"
	@echo "derivatives/ldae-preproc/ (preprocessing + qc.tsv), models/ (trained stages and baselines), embeddings/,"
	@echo "results/ (tables/, figures/, README.md: our numbers beside the paper's), logs/, benchmarks/;"
	@echo "the report with every table and figure is demo/report.html"
	@echo
	@$(BIN)/python -m ldae.cli demo-summary --out-dir demo --json demo/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not slurm"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakemake --lint --cores 1 --profile profiles/demo

# lint fixes first (they may leave findings to fix by hand: make lint lists them), then the formatters
format: $(STAMP)
	$(BIN)/ruff check --fix --exit-zero .
	$(BIN)/ruff format .
	$(BIN)/snakefmt .

dryrun: $(STAMP)
	$(BIN)/snakemake -n --profile profiles/demo

report: $(STAMP)
	$(BIN)/snakemake --report report.html

# Apptainer images of envs/*.yaml (containers/*.def) where Apptainer exists; ENVS="torch" builds one
containers:
	bash tools/build_containers.sh $(ENVS)

clean-demo:
	rm -rf demo
