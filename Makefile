# make demo  — fresh machine: create .venv, install, run the whole chain on a generated synthetic ADNI download
# make test  — fresh machine: create .venv if missing, run the test suite (the command .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint dryrun report containers clean-demo

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
	@$(BIN)/python -m ldae.cli demo-summary --out-dir demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakemake --lint --cores 1 --profile profiles/demo

dryrun: $(STAMP)
	$(BIN)/snakemake -n --profile profiles/demo

report: $(STAMP)
	$(BIN)/snakemake --report report.html

# Apptainer images of envs/*.yaml (containers/*.def) where Apptainer exists; ENVS="torch" builds one
containers:
	bash tools/build_containers.sh $(ENVS)

clean-demo:
	rm -rf demo
