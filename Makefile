# imagefolder-compendium — every target installs what it needs into .venv on first use.
#   make reproduce [PROFILE=cpu|gpu|paper|smoke]   regenerate results/<profile>/ from the notebooks
#   make test                                     the test suite (smoke profile, ~10 min on 2 cores)
SHELL := /bin/bash
.DELETE_ON_ERROR:
.PHONY: setup data test reproduce claims html bench clean distclean

PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := imagefolder
OUT := results/$(PROFILE)
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "imagefolder (.venv)" > /dev/null
	touch $@

data: $(STAMP)
	$(PY) -m imagefolder data --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m imagefolder data --profile smoke
	$(PY) -m pytest -q

define run_notebook
	mkdir -p $(OUT)/executed
	$(PY) -m papermill $(1) $(OUT)/executed/$(notdir $(1)) -k $(KERNEL) --cwd . -p profile $(PROFILE) -p out_dir results
endef

# Notebooks run in order; `make -j2 reproduce` runs two at a time (the cpu profile uses one thread per
# process, and notebooks that need the same model wait for whichever trains it first).
reproduce: $(patsubst notebooks/%.ipynb,nb-%,$(NOTEBOOKS))
	$(PY) -m imagefolder claims --profile $(PROFILE)
	$(MAKE) html PROFILE=$(PROFILE)

nb-%: data
	$(call run_notebook,$(firstword $(wildcard notebooks/$*_*.ipynb) $(wildcard notebooks/$*.ipynb)))

claims: $(STAMP)
	$(PY) -m imagefolder claims --profile $(PROFILE)

html: $(STAMP)
	mkdir -p $(OUT)/reports
	$(PY) -m jupyter nbconvert --to html --no-input --output-dir $(OUT)/reports $(OUT)/executed/*.ipynb

bench: $(STAMP)
	$(PY) -m imagefolder bench --profile $(PROFILE)

clean:
	rm -rf runs/smoke results/smoke .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf runs data $(VENV) *.egg-info
