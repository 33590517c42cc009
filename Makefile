# The two set-up commands of the README: `make pretrain` (the main job) and `make test`.
# Both create or reuse the virtual environment in .venv and install what they need into it.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.semvlp-installed

.PHONY: pretrain test

$(INSTALLED): requirements-dev.txt setup.py
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
