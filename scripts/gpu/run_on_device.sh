#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root of the
# copy it receives, with gpu-bundle/ carried (built here by
# scripts/gpu/build_bundle.sh). Each phase fits one 10-minute `run` call and
# leaves at most 8 files in $OUT:
#
#   tests    every CUDA test binary (kernels first, the executor's whole-model
#            logits test last), --nocapture; a test that prints SKIPPED counts
#            as a failure here (there is a GPU)        -> tests.log, tests-summary.md
#   bench    gpu_ceilings, gpu_kernels_bench, gpu_decode_bench (against the
#            ceilings just measured)                   -> bench.log, bench-summary.md,
#                                                         ceilings.json, kernels.json, decode.json
#   offline  gpu_offline_bench (1000 x 512/256), then transformers' generate_batch
#            on the same shape and workload            -> offline.log, offline-summary.md,
#                                                         offline.json, hf.json
#   sanitize compute-sanitizer memcheck + racecheck over the kernel tests
#                                                      -> sanitize.log, sanitize-summary.md
#
#   bash scripts/gpu/run_on_device.sh tests|bench|offline|sanitize
#
# PHASE_BUDGET_S (default 560) bounds a phase; each step runs under `timeout`
# with its own budget, cut to what is left. Exit status: 0 when every step
# passed, 1 otherwise (the logs say which).
set -uo pipefail

PHASE=${1:-}
case $PHASE in tests | bench | offline | sanitize) ;; *)
    echo "usage: $0 tests|bench|offline|sanitize" >&2
    exit 2
    ;;
esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/$PHASE.log
SUMMARY=$OUT/$PHASE-summary.md
BUDGET=${PHASE_BUDGET_S:-560}
START=$(date +%s)
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

FAILED=0
: >"$SUMMARY"
row() { echo "$*" >>"$SUMMARY"; }
say() { printf '\n===== %s (t=%ss)\n' "$*" "$(($(date +%s) - START))"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# run_step NAME BUDGET_S CMD...: runs CMD under timeout (its budget, cut to
# what the phase has left), records rc, time and SKIPPED lines.
run_step() {
    local name=$1 want=$2
    shift 2
    local avail
    avail=$(($(left) - 5))
    if [ "$avail" -lt 10 ]; then
        say "$name: NOT RUN (phase budget spent)"
        row "| $name | not run | - | phase budget spent |"
        FAILED=1
        return
    fi
    local t=$((want < avail ? want : avail))
    say "$name (timeout ${t}s): $*"
    local steplog=/tmp/step-$$.log
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$t" "$@" 2>&1 | tee "$steplog"
    rc=${PIPESTATUS[0]}
    local dt=$(($(date +%s) - t0))
    # A test skipped for want of a GPU or a CUDA library is a failure here;
    # other skips (e.g. the default model, which is not on this machine) are noted.
    local gpu_skips other_skips
    gpu_skips=$(grep 'SKIPPED' "$steplog" | grep -c -i -E 'no CUDA device|NVRTC|cuBLAS|libcuda|driver' || true)
    other_skips=$(($(grep -c 'SKIPPED' "$steplog" || true) - gpu_skips))
    local verdict=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        verdict="TIMED OUT after ${t}s"
    elif [ "$rc" != 0 ]; then
        verdict="FAILED (exit $rc)"
    elif [ "$gpu_skips" != 0 ]; then
        verdict="$gpu_skips tests SKIPPED for want of the GPU or a CUDA library"
    fi
    [ "$verdict" = ok ] || FAILED=1
    local note
    note=$(grep -E '^test result:|target|% of the roofline|output tok/s' "$steplog" | tail -n 3 | tr '\n' ' ' | cut -c1-300)
    [ "$other_skips" = 0 ] || note="$other_skips other skips; $note"
    row "| $name | $verdict | ${dt}s | $note |"
    rm -f "$steplog"
}

say "phase $PHASE on $(hostname), $(date -u)"
row "# $PHASE on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
row ""

# --- the bundle ---
B=/tmp/gpu-bundle
if [ ! -f gpu-bundle/bundle.tar.gz ]; then
    echo "no gpu-bundle/bundle.tar.gz: build it with scripts/gpu/build_bundle.sh and pass carry=[\"gpu-bundle\"]"
    exit 1
fi
rm -rf "$B" && mkdir -p "$B" && tar -xzf gpu-bundle/bundle.tar.gz -C "$B" || exit 1
cat "$B/MANIFEST"
# Test binaries find fixtures through the source path they were built in
# (CARGO_MANIFEST_DIR): make that path lead here.
BUILD_ROOT=$(sed -n 's/^build_root=//p' "$B/MANIFEST")
if [ -n "$BUILD_ROOT" ] && [ "$BUILD_ROOT" != "$ROOT" ] && [ ! -e "$BUILD_ROOT" ]; then
    mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$ROOT" "$BUILD_ROOT" && echo "linked $BUILD_ROOT -> $ROOT"
fi

# --- the machine and its CUDA libraries ---
say "environment"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv || true
nvidia-smi -q -d COMPUTE,ECC 2>/dev/null | grep -E 'Compute Mode|Volatile|Pending' | head -n 6 || true
command -v nvcc >/dev/null && nvcc --version | tail -n 2
find_lib() { # first file named $1* in the usual places
    local d
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
        /usr/lib/x86_64-linux-gnu $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in sorted(os.listdir(p))]' 2>/dev/null); do
        ls "$d"/$1* 2>/dev/null | sort | head -n 1
    done | head -n 1
}
export FACTORY_NVRTC_LIB=${FACTORY_NVRTC_LIB:-$(find_lib libnvrtc.so.13)}
export FACTORY_CUBLASLT_LIB=${FACTORY_CUBLASLT_LIB:-$(find_lib libcublasLt.so.13)}
[ -n "$FACTORY_NVRTC_LIB" ] || export FACTORY_NVRTC_LIB=$(find_lib libnvrtc.so.)
[ -n "$FACTORY_CUBLASLT_LIB" ] || export FACTORY_CUBLASLT_LIB=$(find_lib libcublasLt.so.)
for v in FACTORY_NVRTC_LIB FACTORY_CUBLASLT_LIB; do
    if [ -z "${!v}" ]; then
        echo "WARNING: $v: no library found; the binaries will search the loader path"
        unset "$v"
    else
        echo "$v=${!v}"
        export LD_LIBRARY_PATH=$(dirname "${!v}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
done
export FACTORY_REQUIRE_NVRTC=1
export FACTORY_CACHE_DIR=/tmp/factory-cache
export RUST_BACKTRACE=1
export PYTHONUNBUFFERED=1
"$B/bin/factory" --version 2>&1 | head -n 1 || true

case $PHASE in
tests)
    row "| step | result | time | note |"
    row "|---|---|---|---|"
    # Kernel tests first, the executor's (whole-model logits vs the CPU) last.
    mapfile -t TESTS < <(grep '^test ' "$B/MANIFEST" | awk '{print $2, $3}' |
        awk '{k = ($1 ~ /executor/) ? 2 : ($1 ~ /^engine/) ? 1 : 0; print k, $0}' | sort -s -k1,1n | cut -d' ' -f2-)
    for t in "${TESTS[@]}"; do
        read -r name filter <<<"$t"
        if [[ $name == *compile* ]]; then
            # NVRTC only, no GPU: CI runs it; not worth device time.
            row "| $name | not run (needs no GPU; CI runs it) | - | |"
            continue
        fi
        budget=150
        [[ $name == *executor* ]] && budget=240
        run_step "$name" "$budget" "$B/tests/$name" ${filter:+"$filter"} --nocapture --test-threads=1
    done
    # End to end: `factory serve --backend cuda --random-weights` (Llama-3.2-1B
    # shape, the fixture tokenizer beside it) answers a Converse request.
    run_step factory-serve-smoke 150 bash scripts/gpu/serve_smoke.sh "$B/bin/factory"
    ;;
bench)
    row "| step | result | time | note |"
    row "|---|---|---|---|"
    # The card's two ceilings first: every other number is read against them.
    if [ -x "$B/bin/gpu_ceilings" ]; then
        run_step gpu_ceilings 120 "$B/bin/gpu_ceilings" --json "$OUT/ceilings.json"
    else
        row "| gpu_ceilings | not in bundle | - | |"
    fi
    if [ -x "$B/bin/gpu_kernels_bench" ]; then
        run_step gpu_kernels_bench 200 "$B/bin/gpu_kernels_bench" --json "$OUT/kernels.json"
    else
        row "| gpu_kernels_bench | not in bundle | - | |"
    fi
    if [ -x "$B/bin/gpu_decode_bench" ]; then
        ceil=()
        [ -s "$OUT/ceilings.json" ] && ceil=(--ceilings "$OUT/ceilings.json")
        run_step gpu_decode_bench 220 "$B/bin/gpu_decode_bench" "${ceil[@]}" --json "$OUT/decode.json"
    else
        row "| gpu_decode_bench | not in bundle | - | |"
    fi
    ;;
offline)
    row "| step | result | time | note |"
    row "|---|---|---|---|"
    if [ -x "$B/bin/gpu_offline_bench" ]; then
        run_step gpu_offline_bench 270 "$B/bin/gpu_offline_bench" --time-limit 240 --json "$OUT/offline.json"
    else
        row "| gpu_offline_bench | not in bundle | - | |"
    fi
    # The baseline on the same config and workload, after ours has freed the GPU.
    run_step hf_generate_batch 270 python3 benches/gpu/hf_generate_batch.py --json "$OUT/hf.json"
    if [ -s "$OUT/offline.json" ] && [ -s "$OUT/hf.json" ]; then
        python3 - "$OUT/offline.json" "$OUT/hf.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
ours, hf = (json.load(open(p)) for p in sys.argv[1:3])
h = hf.get("generation_output_tok_per_s") or hf.get("call_output_tok_per_s")
print(f"\nfactory {ours['output_tok_per_s']:.0f} output tok/s vs transformers generate_batch "
      f"{h:.0f} ({hf['transformers']}, {hf['attn_implementation']}): {ours['output_tok_per_s'] / h:.2f}x")
EOF
    fi
    ;;
sanitize)
    row "| step | result | time | note |"
    row "|---|---|---|---|"
    if ! command -v compute-sanitizer >/dev/null; then
        row "| compute-sanitizer | not installed | - | |"
        FAILED=1
    else
        for name in $(grep '^test kernels-' "$B/MANIFEST" | awk '{print $2}' | grep -v -e lib -e compile); do
            for tool in memcheck racecheck; do
                run_step "$name/$tool" 240 compute-sanitizer --tool "$tool" --error-exitcode 99 \
                    "$B/tests/$name" --test-threads=1
            done
        done
    fi
    ;;
esac

say "summary"
cat "$SUMMARY"
echo
echo "phase $PHASE: $([ $FAILED = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED'); $(($(date +%s) - START)) s; files in \$OUT:"
ls -la "$OUT"
# Let tee write the last lines of the log before the tool collects $OUT.
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null || sleep 1
exit $FAILED
