# imagefolder-compendium — every target installs what it needs into $(VENV) on first use.
# `make` (or `make help`) lists the targets and the variables they take.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
.PHONY: help setup data lint test mutation reproduce notebooks train claims html bench plan clean distclean

PROFILE ?= cpu## the profile to run: smoke | cpu | gpu | paper
VENV ?= .venv## the Python environment: VENV=$CONDA_PREFIX uses an existing (conda) env, no .venv is built
PINNED ?= 1## 1: install the exact versions in requirements-lock.txt; 0: only pyproject's lower bounds
PYTHON ?= python3## the interpreter that creates .venv
THROUGHPUT ?=## plan: a stated FLOP/s (e.g. 4e14) to estimate steps from their FLOPs instead of timing them
OVERRIDES ?=## nb-NN's config overrides as JSON ('{"quantizer.dropout_p": 0.3}'): a variant, under results/<profile>/variants/
PY := $(VENV)/bin/python
LOCK := requirements-lock.txt
STAMP := $(VENV)/.installed-$(if $(filter 1,$(PINNED)),pinned,unpinned)
KERNEL := imagefolder
OUT := results/$(PROFILE)
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
# torch CPU threads per process: the cores ÷ make's job count (-jN in MAKEFLAGS; bare -j counts as one job
# per core), at least 1, so `make -jN` never oversubscribes; passed as threads=N (notebooks: OMP_NUM_THREADS,
# torch's default where the profile's `threads` is 0)
NPROC := $(shell nproc 2>/dev/null || echo 1)
JOBS = $(if $(filter -j,$(MAKEFLAGS)),$(NPROC),$(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1))
THREADS = $(shell echo $$(( $(NPROC) / $(JOBS) > 0 ? $(NPROC) / $(JOBS) : 1 )))

# nb-NN runs the notebook notebooks/NN_*.ipynb; a goal that matches none stops make before anything runs.
notebook = $(firstword $(wildcard notebooks/$(1)_*.ipynb) $(wildcard notebooks/$(1).ipynb))
AVAILABLE := $(foreach n,$(sort $(wildcard notebooks/*.ipynb)),$(firstword $(subst _, ,$(notdir $(n)))))
$(foreach g,$(filter nb-%,$(MAKECMDGOALS)),$(if $(call notebook,$(g:nb-%=%)),,\
  $(error no notebook matches notebooks/$(g:nb-%=%)_*; available: $(AVAILABLE))))

help: ## list the targets and variables (the default)
	@echo "usage: make <target> [VARIABLE=value ...]"
	@echo "targets:"
	@awk -F ':[^#]*## ' '/^[a-z%][a-z0-9%-]*:[^=]*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "variables (default):"
	@awk -F '## ' '/^[A-Z]+ \?=.*## / {split($$1, v, / *[?]= */); printf "  %-24s %s\n", v[1] "=" v[2], $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## create .venv (or use VENV), install the package pinned (PINNED=0: unpinned), register the kernel

$(STAMP): pyproject.toml $(LOCK)
ifeq ($(VENV),.venv)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
else
	@test -x $(PY) || { echo "VENV=$(VENV) has no bin/python: give an existing environment, e.g. VENV=\$$CONDA_PREFIX" >&2; exit 1; }
endif
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(filter 1,$(PINNED)),-c $(LOCK)) -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "imagefolder ($(notdir $(abspath $(VENV))))" > /dev/null
	rm -f $(VENV)/.installed-*
	touch $@

data: $(STAMP) ## the emoji data set and the profile's teacher and evaluator (idempotent)
	$(PY) -m imagefolder data --profile $(PROFILE) threads=$(THREADS)

lint: $(STAMP) ## ruff over the package, tests, scripts and notebooks (code cells); mypy over the package
	$(PY) -m ruff check imagefolder tests scripts notebooks
	$(PY) -m mypy

test: lint ## lint, then the test suite (smoke profile, ~5 min on 2 cores)
	$(PY) -m imagefolder data --profile smoke
	$(PY) -m pytest -q

# Not part of `test`: mutmut over the core modules' functions (scripts/mutation.py), each mutant against the fast
# tests that reach it, one torch thread per test, at low priority, one worker per core. tests/MUTATION.md (2930
# mutants: 2887 killed, 43 equivalent, none open) was measured in parts on 2 cores shared with two trainings: the
# 873 config mutants and 107 re-checked survivors took 54 min with two workers (the trainings at nice 19), the
# other 2057 about 50 min with one worker under full load. A whole run on an idle 2-core machine is not measured;
# expect about an hour, most of it config's validate, whose every mutant reaches ~150 tests.
mutation: $(STAMP) ## mutation testing of the core modules; writes tests/MUTATION.md (MODULES="stats quantize": some)
	rm -rf mutants
	$(PY) scripts/mutation.py run $(MODULES)
	$(PY) scripts/mutation.py report

# A notebook is named after its file (`name`, so a copy writes its own results); with OVERRIDES, or for a
# notebook git does not track (a copy), its executed copy goes beside its variant's tables, never among the
# committed ones.
TRACKED_NOTEBOOKS := $(shell git ls-files 'notebooks/*.ipynb' 2>/dev/null)
variant_run = $(or $(OVERRIDES),$(filter-out $(TRACKED_NOTEBOOKS),$(1)))
executed_dir = $(if $(call variant_run,$(1)),$(OUT)/variants/$(basename $(notdir $(1)))/executed,$(OUT)/executed)
define run_notebook
	mkdir -p $(call executed_dir,$(1))
	OMP_NUM_THREADS=$(THREADS) $(PY) -m papermill $(1) $(call executed_dir,$(1))/$(notdir $(1)) -k $(KERNEL) --cwd . \
	  --log-output --no-progress-bar -p profile $(PROFILE) \
	  -p out_dir results -r name $(basename $(notdir $(1)))$(if $(OVERRIDES), -y '{"overrides": $(OVERRIDES)}')
endef

# `make -jN reproduce` first trains every model the notebooks need in N processes (`train`), then runs the
# notebooks N at a time, which find their models trained (the cpu profile uses one thread per process).
reproduce: ## train every model (`train`), then every notebook, the claims ledger and the HTML reports
	$(MAKE) train
	$(MAKE) notebooks
	$(PY) -m imagefolder claims --profile $(PROFILE)
	$(MAKE) html

notebooks: $(patsubst notebooks/%.ipynb,nb-%,$(NOTEBOOKS)) ## every notebook (each trains what it needs and lacks)

# The plan's runs (`make plan`) in JOBS processes (one per -j slot), each a shard of whole tokenizer groups; a run
# two processes need is trained once (a lock per run). Kill it and run it again: every run resumes.
train: data ## train every model `reproduce` needs (`make plan` lists them), one process per -j slot
	@pids=; for i in $$(seq 1 $(JOBS)); do \
	  $(PY) -m imagefolder train-all --profile $(PROFILE) --shard $$i/$(JOBS) threads=$(THREADS) & pids="$$pids $$!"; \
	done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status

nb-%: data ## run one notebook: make nb-03 runs notebooks/03_*.ipynb
	$(call run_notebook,$(firstword $(wildcard notebooks/$*_*.ipynb) $(wildcard notebooks/$*.ipynb)))

claims: $(STAMP) ## re-write the claims ledger results/<profile>/claims.md from the tables
	$(PY) -m imagefolder claims --profile $(PROFILE)

html: $(STAMP) ## the HTML reports and index.html from the executed notebooks (runs nothing)
	$(PY) -m imagefolder html --profile $(PROFILE)

plan: $(STAMP) ## the models `reproduce` would train, which exist, and their estimated time (trains nothing)
	$(PY) -m imagefolder plan --profile $(PROFILE) $(if $(THROUGHPUT),--flops-per-second $(THROUGHPUT)) threads=$(THREADS)

bench: data ## the fast paths against fp32 eager as ratios; latency / FLOPs of the token layouts; tokenizer throughput
	$(PY) -m imagefolder bench --profile $(PROFILE) threads=$(THREADS)

clean: ## remove the smoke runs and results and the caches
	rm -rf runs/smoke results/smoke .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## also remove runs/, data/ and .venv
	rm -rf runs data $(VENV) *.egg-info
