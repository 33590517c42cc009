#!/usr/bin/env bash
# One visit to a lent GPU machine, in one call, in under 8 minutes:
#   carried wheels (.whl/) -> semvlp installed, csrc/ built for sm_90 -> pytest -m gpu -> every bench/bench_*.py
#   within the time left, with bench/profile_step.py after the first -> compute-sanitizer memcheck on
#   bench/cuda_memcheck.py (when it exists)
# Logs and results are archived into $OUT (at most 8 files); the summary table is printed last.
#
#   bench/gpu_check.sh              on the GPU machine (the repository root is the working directory)
#   bench/gpu_check.sh --dry-run    the same steps on a CPU: no install, benchmarks with --quick on the CPU
#
# Environment: OUT (where results go; a temporary folder if unset), GPU_CHECK_BUDGET (seconds for the whole
# script, default 450), GPU_CHECK_TESTS_LIMIT (seconds for pytest -m gpu, at most half the time left; default 120),
# GPU_CHECK_BENCHES (names of the bench scripts to run, in that order, e.g. "attention e2e"; default all),
# GPU_CHECK_ARGS_<name> (extra arguments for bench_<name>, e.g. GPU_CHECK_ARGS_attention="--cases vl_"),
# GPU_CHECK_PROFILE (0 skips bench/profile_step.py, which runs after the first bench),
# GPU_CHECK_MEMCHECK (0 skips compute-sanitizer), PYTHON (default python3; .venv/bin/python in a dry run
# when it exists).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
BUDGET=${GPU_CHECK_BUDGET:-450}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)
mkdir -p "$WORK/logs" "$WORK/results"
LOG="$WORK/gpu_check.log"
STEPS="$WORK/steps.tsv"
: >"$STEPS"
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ $DRY_RUN == 1 && -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
DEVICE=cuda
if [[ $DRY_RUN == 1 ]]; then DEVICE=cpu; fi
export PYTHONUNBUFFERED=1

say() { echo "[gpu_check $(printf '%3d' "$SECONDS")s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - SECONDS)); }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STEPS"; }

# run_step NAME SECONDS COMMAND...: run with a time limit, log to logs/NAME.log, record status and duration.
run_step() {
    local name=$1 limit=$2; shift 2
    if (( limit < 5 )); then
        say "$name: skipped, no time left"; record "$name" "skipped (no time left)" 0; return 0
    fi
    say "$name: $* (limit ${limit}s)"
    local start=$SECONDS rc
    timeout -k 15 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    cat "$WORK/logs/$name.log" >>"$LOG"
    local status="ok"
    if (( rc == 124 || rc == 137 )); then status="TIMEOUT after ${limit}s"
    elif (( rc != 0 )); then status="FAILED (exit $rc)"; fi
    record "$name" "$status" $((SECONDS - start))
    say "$name: $status"
    return $rc
}

# ---- 1. environment --------------------------------------------------------------------------------------
run_step environment 30 bash -c "command -v nvidia-smi >/dev/null && nvidia-smi; $PY -c 'import sys, torch; \
print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpu\", \
torch.cuda.get_device_name() if torch.cuda.is_available() else None)'"

# ---- 2. carried wheels -----------------------------------------------------------------------------------
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} == 0 )); then
    record wheels "none carried" 0
elif [[ $DRY_RUN == 1 ]]; then
    say "wheels (dry run, not installed): ${wheels[*]}"; record wheels "dry run: ${#wheels[@]} found" 0
else
    run_step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${wheels[@]}" && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# ---- 3. semvlp and csrc/ for sm_90 -----------------------------------------------------------------------
sources=$(find csrc -name '*.cu' -o -name '*.cpp' 2>/dev/null | wc -l)
if [[ $DRY_RUN == 1 ]]; then
    record install "dry run: not installed (csrc: $sources sources)" 0
else
    SEMVLP_CUDA_ARCHS=90 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
        run_step install $(( $(left) < 400 ? $(left) / 2 : 200 )) \
        "$PY" -m pip install --no-build-isolation --no-deps -e . \
        || { say "install failed: semvlp runs from the source tree, without semvlp._C"
             export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}; }
    sed -i "s/^install\tok\t/install\tok (csrc: $sources sources)\t/" "$STEPS"
fi
run_step backends 60 "$PY" -c "import semvlp; print('semvlp', semvlp.__version__, semvlp.backends())"

# ---- 4. GPU tests ----------------------------------------------------------------------------------------
# Fixed Triton tiles in the tests (autotuning compiles every config); one test turns autotuning back on.
# Only the modules that hold GPU tests are collected: others import packages the GPU machine lacks
# (deepspeed, easy_vqa), and a collection error would stop the whole run.
TESTS_LIMIT=${GPU_CHECK_TESTS_LIMIT:-120}
mapfile -t gpu_test_files < <(grep -rlE "pytest\.mark\.gpu" tests --include='*.py' | sort)
SEMVLP_TRITON_AUTOTUNE=0 run_step pytest_gpu $(( $(left) / 2 < TESTS_LIMIT ? $(left) / 2 : TESTS_LIMIT )) \
    "$PY" -m pytest -m gpu -v --tb=short -p no:cacheprovider --junitxml="$WORK/results/pytest_gpu.xml" \
    "${gpu_test_files[@]}"
tests_rc=$?
if (( tests_rc == 5 )); then sed -i "s/^pytest_gpu\tFAILED (exit 5)/pytest_gpu\tno GPU tests collected/" "$STEPS"; fi
summary_line=$(grep -E "passed|failed|skipped|error" "$WORK/logs/pytest_gpu.log" 2>/dev/null | tail -1)
if [[ -n "$summary_line" ]]; then sed -i "s/^\(pytest_gpu\t[^\t]*\)/\1: ${summary_line//\//-}/" "$STEPS"; fi

# ---- 5. benchmarks ---------------------------------------------------------------------------------------
memcheck_reserve=0
MEMCHECK=${GPU_CHECK_MEMCHECK:-1}
if [[ -f bench/cuda_memcheck.py && $DRY_RUN == 0 && $MEMCHECK != 0 ]]; then memcheck_reserve=90; fi
if [[ -n "${GPU_CHECK_BENCHES:-}" ]]; then
    benches=(); for name in $GPU_CHECK_BENCHES; do benches+=("bench/bench_$name.py"); done
else
    benches=(bench/bench_*.py)
fi
for i in "${!benches[@]}"; do
    name=$(basename "${benches[$i]}" .py)
    remaining=$(( $(left) - memcheck_reserve - 15 ))
    share=$(( remaining / (${#benches[@]} - i) ))
    if [[ $DRY_RUN == 1 ]]; then
        budget=5; extra=(--quick --calls 1)
    else
        # the harness's budget bounds the timing; the rest of the share is for start-up and building models
        budget=$(( share * 2 / 3 )); extra=()
    fi
    args_var="GPU_CHECK_ARGS_${name#bench_}"
    # shellcheck disable=SC2206  # the variable holds several arguments
    extra+=(${!args_var:-})
    run_step "$name" "$share" "$PY" -m "bench.$name" --device "$DEVICE" --budget "$budget" \
        --out-dir "$WORK/results" "${extra[@]}"
    if (( i == 0 )) && [[ ${GPU_CHECK_PROFILE:-1} != 0 ]]; then
        # torch.profiler tables of one pretraining step and of the fused ops: host-bound or kernel-bound
        profile_args=(--out "$WORK/results/profile_step.txt")
        if [[ $DRY_RUN == 1 ]]; then profile_args+=(--size tiny --calls 1 --rows 5); fi
        run_step profile_step $(( ($(left) - memcheck_reserve) / 4 )) "$PY" -m bench.profile_step \
            --device "$DEVICE" "${profile_args[@]}"
    fi
done

# ---- 6. compute-sanitizer --------------------------------------------------------------------------------
if [[ ! -f bench/cuda_memcheck.py ]]; then
    record memcheck "skipped (no bench/cuda_memcheck.py)" 0
elif [[ $MEMCHECK == 0 ]]; then
    record memcheck "skipped (GPU_CHECK_MEMCHECK=0)" 0
elif [[ $DRY_RUN == 1 ]]; then
    record memcheck "dry run: not run" 0
elif ! command -v compute-sanitizer >/dev/null; then
    record memcheck "skipped (compute-sanitizer not found)" 0
else
    # Without the caching allocator every tensor is its own allocation, so a read past its end is caught.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_step memcheck $(( $(left) - 10 )) \
        compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" bench/cuda_memcheck.py
fi

# ---- 7. archive and summary ------------------------------------------------------------------------------
{
    echo "== gpu_check: $([[ $DRY_RUN == 1 ]] && echo 'dry run on the CPU' || echo 'GPU'), ${SECONDS}s of ${BUDGET}s =="
    printf '%-26s %-60s %s\n' step status seconds
    while IFS=$'\t' read -r step status secs; do printf '%-26s %-60s %s\n' "$step" "$status" "$secs"; done <"$STEPS"
    "$PY" -m bench.summary "$WORK/results"
} >"$WORK/summary.txt" 2>&1
cp "$WORK/summary.txt" "$OUT/summary.txt"
cp "$LOG" "$OUT/gpu_check.log"
# At most 8 files come back from $OUT: the JSON files also lie there directly when they are few.
results=("$WORK"/results/*.json "$WORK"/results/*.txt)
if (( ${#results[@]} > 0 && ${#results[@]} <= 5 )); then
    mkdir -p "$OUT/results" && cp "${results[@]}" "$OUT/results/"
fi
tar czf "$OUT/gpu_check_results.tar.gz" -C "$WORK" results logs steps.tsv summary.txt
rm -rf "$WORK"
echo
cat "$OUT/summary.txt"
