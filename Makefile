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

.PHONY: pretrain pretrain-folder test ablation schedule-study easy-vqa

$(INSTALLED): requirements-dev.txt setup.py $(CSRC)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "semvlp needs Python 3.11 or newer (the pinned numpy 2.4 does); $(VENV) has " + sys.version.split()[0])'
	$(PYTHON) -m pip install -q --upgrade pip
	grep -v -- '--no-deps' requirements-dev.txt > $(VENV)/requirements-deps.txt
	$(PYTHON) -m pip install -q -r $(VENV)/requirements-deps.txt
	grep -- '--no-deps' requirements-dev.txt | cut -d'#' -f1 | xargs $(PYTHON) -m pip install -q --no-deps
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The main job on the CPU: synthetic data in the real formats and a WordPiece vocab trained on its text, then
# the tiny model pretrained under DeepSpeed (2 ranks, ZeRO-2; bf16 where the CPU runs it natively, fp32 otherwise:
# zero2_auto.json, override with PRECISION=bf16|fp32), then held-out image-text matching,
# masked attribute-word and phrase grounding accuracy.
RUN ?= runs/pretrain
PRETRAIN_STEPS ?= 700
PRECISION ?= auto
# The main job's recipe, the one source make ablation and make schedule-study take it from.
MAIN_TRAIN_SCENES := 4000
MAIN_HELD_OUT_SCENES := 400
MAIN_VOCAB_SIZE := 1000
MAIN_RANKS := 2
MAIN_MODEL_CONFIG := configs/model/tiny.json
MAIN_DEEPSPEED_CONFIG := configs/deepspeed/zero2_auto.json
MAIN_PRETRAIN_OPTIONS = --precision $(PRECISION) --micro-batch-size 256 --lr 2e-3 --warmup-steps 50 \
	--attribute-mask-rate 0.8 --relation-mask-rate 0.4
# The marker `make pretrain` leaves in RUN: it only ever deletes a folder that holds it, one it made itself.
RUN_MARKER := .made-by-make-pretrain

pretrain: pretrain-folder $(INSTALLED)
	start=$$(date +%s) && \
	$(PYTHON) -m semvlp.cli data synth --out $(RUN)/data --train $(MAIN_TRAIN_SCENES) --val $(MAIN_HELD_OUT_SCENES) \
		--novel $(MAIN_HELD_OUT_SCENES) && \
	$(PYTHON) -m semvlp.cli data vocab --corpus $(RUN)/data/captions_train.json $(RUN)/data/vqa_questions_train.json \
		--out $(RUN)/vocab --vocab-size $(MAIN_VOCAB_SIZE) && \
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch_extensions $(VENV)/bin/deepspeed --num_accelerators $(MAIN_RANKS) \
		--module semvlp.cli pretrain --data $(RUN)/data --model-config $(MAIN_MODEL_CONFIG) \
		--vocab $(RUN)/vocab/vocab.txt --deepspeed-config $(MAIN_DEEPSPEED_CONFIG) --output $(RUN) \
		--max-steps $(PRETRAIN_STEPS) $(MAIN_PRETRAIN_OPTIONS) --checkpoint-every $(PRETRAIN_STEPS) --export && \
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

# Downstream (docs/finetuning.md: the ablation). One thread per process: with two cores shared by two ranks a
# second OpenMP thread mostly waits for a busy core.
# make ablation: single-stream only, two-stream only and alternating 1:1; make schedule-study: those and
# alternating 3:1 and 1:3 and the two curricula. Each schedule x seed pretrains at the main job's recipe (above),
# then fine-tunes and evaluates the same way; a finished one (ABLATION/<schedule>_seed<n>/row.json of the same
# setup) is kept, so an interrupted study continues and the schedule study reuses the ablation's runs.
# A quick check of the machinery at a tiny budget, away from the committed reports:
#   make ablation ABLATION=runs/ablation-check ABLATION_REPORTS=runs/ablation-check/reports ABLATION_STEPS=20 \
#     ABLATION_SEEDS="0 1" ABLATION_ARGS="--qa-steps 5 --test-scenes 40 --retrieval-images 20"
ABLATION ?= runs/ablation
ABLATION_REPORTS ?= reports
ABLATION_STEPS ?= $(PRETRAIN_STEPS)
ABLATION_SEEDS ?= 0 1 2
ABLATION_ARGS ?=
STUDY_SCHEDULES := single two alternate alternate-3:1 alternate-1:3 single-then-two two-then-single
ABLATION_RUN = OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch_extensions \
	$(PYTHON) -m semvlp.cli ablation --output $(ABLATION) --reports $(ABLATION_REPORTS) --seeds $(ABLATION_SEEDS) \
	--model-config $(MAIN_MODEL_CONFIG) --deepspeed-config $(MAIN_DEEPSPEED_CONFIG) --ranks $(MAIN_RANKS) \
	--pretrain-steps $(ABLATION_STEPS) --pretrain-options="$(MAIN_PRETRAIN_OPTIONS)" \
	--train-scenes $(MAIN_TRAIN_SCENES) --held-out-scenes $(MAIN_HELD_OUT_SCENES) --vocab-size $(MAIN_VOCAB_SIZE)
EASY_VQA ?= runs/easy_vqa
# The pretraining easy-VQA fine-tunes from: the ablation's alternating run (make ablation first), or runs/pretrain.
EASY_VQA_INIT ?= $(ABLATION)/alternate_seed0/pretrain
EASY_VQA_STEPS ?= 3000

ablation: $(INSTALLED)
	$(ABLATION_RUN) --name ablation --schedules single two alternate $(ABLATION_ARGS)

schedule-study: $(INSTALLED)
	$(ABLATION_RUN) --name schedule_study --schedules $(STUDY_SCHEDULES) $(ABLATION_ARGS)

easy-vqa: $(INSTALLED)
	OMP_NUM_THREADS=1 $(PYTHON) -m semvlp.cli data easy-vqa --out $(EASY_VQA)/data && \
	OMP_NUM_THREADS=1 $(PYTHON) -m semvlp.cli finetune --task qa --data $(EASY_VQA)/data --init $(EASY_VQA_INIT) \
		--output $(EASY_VQA)/qa --steps $(EASY_VQA_STEPS) --lr 1e-3 --eval-splits test --report reports/easy_vqa.json
