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

.PHONY: pretrain pretrain-folder test ablation easy-vqa

$(INSTALLED): requirements-dev.txt setup.py $(CSRC)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "semvlp needs Python 3.11 or newer (the pinned numpy 2.4 does); $(VENV) has " + sys.version.split()[0])'
	$(PYTHON) -m pip install -q --upgrade pip
	grep -v -- '--no-deps' requirements-dev.txt > $(VENV)/requirements-deps.txt
	$(PYTHON) -m pip install -q -r $(VENV)/requirements-deps.txt
	grep -- '--no-deps' requirements-dev.txt | cut -d'#' -f1 | xargs $(PYTHON) -m pip install -q --no-deps
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The main job on this CPU: synthetic data in the real formats and a WordPiece vocab trained on its text, then
# the tiny model pretrained under DeepSpeed (2 ranks, ZeRO-2; bf16 where the CPU runs it natively, fp32 otherwise:
# zero2_auto.json, override with PRECISION=bf16|fp32), then held-out image-text matching,
# masked attribute-word and phrase grounding accuracy.
RUN ?= runs/pretrain
PRETRAIN_STEPS ?= 700
PRECISION ?= auto
# The marker `make pretrain` leaves in RUN: it only ever deletes a folder that holds it, one it made itself.
RUN_MARKER := .made-by-make-pretrain

pretrain: pretrain-folder $(INSTALLED)
	start=$$(date +%s) && \
	$(PYTHON) -m semvlp.cli data synth --out $(RUN)/data --train 4000 --val 400 --novel 400 && \
	$(PYTHON) -m semvlp.cli data vocab --corpus $(RUN)/data/captions_train.json $(RUN)/data/vqa_questions_train.json \
		--out $(RUN)/vocab --vocab-size 1000 && \
	TORCH_EXTENSIONS_DIR=$(CURDIR)/$(VENV)/torch_extensions $(VENV)/bin/deepspeed --num_accelerators 2 \
		--module semvlp.cli pretrain --data $(RUN)/data --model-config configs/model/tiny.json \
		--vocab $(RUN)/vocab/vocab.txt --deepspeed-config configs/deepspeed/zero2_auto.json --output $(RUN) \
		--max-steps $(PRETRAIN_STEPS) --precision $(PRECISION) \
		--micro-batch-size 256 --lr 2e-3 --warmup-steps 50 --attribute-mask-rate 0.8 --checkpoint-every $(PRETRAIN_STEPS) --export && \
	echo "make pretrain: $$(( $$(date +%s) - start )) s wall time; metrics, curves.png, checkpoints and export in $(RUN)"

# A fresh, empty RUN folder with the marker: an earlier `make pretrain` folder is replaced; any other existing
# path (RUN=configs, RUN=., a run of `semvlp pretrain`) is refused and left as it is.
pretrain-folder:
	@test -n "$(strip $(RUN))" || { echo "make pretrain: RUN is empty" >&2; exit 1; }
	@if [ -e "$(RUN)" ] && [ ! -f "$(RUN)/$(RUN_MARKER)" ]; then \
		echo "make pretrain: $(RUN) exists and was not made by make pretrain; not deleting it." \
			"Pick another folder (make pretrain RUN=runs/NEW) or remove it yourself" >&2; \
		exit 1; \
	fi
	rm -rf -- "$(RUN)"
	mkdir -p -- "$(RUN)"
	touch -- "$(RUN)/$(RUN_MARKER)"

test: $(INSTALLED)
	$(PYTHON) -m pytest -q

# Downstream (README: Downstream tasks and the ablation). One thread per process: on a shared two-core machine
# a second OpenMP thread mostly waits for a busy core.
ABLATION ?= runs/ablation
EASY_VQA ?= runs/easy_vqa
# The pretraining easy-VQA fine-tunes from: the ablation's alternating run (make ablation first), or runs/pretrain.
EASY_VQA_INIT ?= $(ABLATION)/alternate_seed0/pretrain
EASY_VQA_STEPS ?= 3000

ablation: $(INSTALLED)
	OMP_NUM_THREADS=1 $(PYTHON) -m semvlp.cli ablation --output $(ABLATION) --reports reports

easy-vqa: $(INSTALLED)
	OMP_NUM_THREADS=1 $(PYTHON) -m semvlp.cli data easy-vqa --out $(EASY_VQA)/data && \
	OMP_NUM_THREADS=1 $(PYTHON) -m semvlp.cli finetune --task qa --data $(EASY_VQA)/data --init $(EASY_VQA_INIT) \
		--output $(EASY_VQA)/qa --steps $(EASY_VQA_STEPS) --lr 1e-3 --eval-splits test --report reports/easy_vqa.json
