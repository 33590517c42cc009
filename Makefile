# The two set-up commands of the README: `make pretrain` (the main job) and `make test`.
# Both create or reuse the virtual environment in .venv and install what they need into it.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.semvlp-installed
# The CUDA extension (semvlp._C) is rebuilt whenever a csrc/ source changes. By default it targets sm_90
# only, with two compile jobs, which keeps the CI build within a few minutes on two cores; override with
# e.g. `make test SEMVLP_CUDA_ARCHS="80;90" MAX_JOBS=8`, or skip it with SEMVLP_SKIP_CUDA_BUILD=1.
CSRC := $(shell find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) 2>/dev/null)
export SEMVLP_CUDA_ARCHS ?= 90
export MAX_JOBS ?= 2

.PHONY: pretrain test

$(INSTALLED): requirements-dev.txt setup.py $(CSRC)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	grep -v -- '--no-deps' requirements-dev.txt > $(VENV)/requirements-deps.txt
	$(PYTHON) -m pip install -q -r $(VENV)/requirements-deps.txt
	grep -- '--no-deps' requirements-dev.txt | cut -d'#' -f1 | xargs $(PYTHON) -m pip install -q --no-deps
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

pretrain: $(INSTALLED)
	$(PYTHON) -m semvlp.cli demo --model-config configs/model/tiny.json

test: $(INSTALLED)
	$(PYTHON) -m pytest -q
