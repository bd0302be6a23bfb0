#!/usr/bin/env bash
# guidellm (Red Hat / vLLM project, from PyPI) and factory-bench against the
# same `factory serve --no-auth`, back to back at each concurrency level, with
# the same load: OpenAI chat completions (streamed, include_usage), synthetic
# prompts of PROMPT_TOKENS tokens, max_tokens = OUTPUT_TOKENS with vLLM's
# `ignore_eos` (so every answer is exactly that long), temperature 1, a closed
# loop of c requests in flight, REQUESTS requests per level.
#
#   benches/third_party/guidellm.sh [OUT_DIR]     (default target/guidellm-compare)
#   CONCURRENCY="1 4 16" REQUESTS=32 PROMPT_TOKENS=128 OUTPUT_TOKENS=32 FIRST=guidellm \
#       benches/third_party/guidellm.sh   (FIRST: which tool runs first at the first level)
#
# Installs guidellm (pinned; ~6 GB with torch, which guidellm's data loader
# needs) into target/guidellm-venv on first use. Nothing reaches the Hugging
# Face hub: the tokenizer guidellm sizes prompts with is written from the
# default model's GGUF (transformers + gguf) into target/guidellm-tokenizer.
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDELLM_VERSION=0.8.1
GGUF_VERSION=0.19.0
OUT=${1:-target/guidellm-compare}
CONCURRENCY=${CONCURRENCY:-1 4 16}
REQUESTS=${REQUESTS:-32}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-32}
MODEL_ID=smollm2-135m-instruct
GGUF=${FACTORY_GGUF:-$HOME/.cache/factory/SmolLM2-135M-Instruct.Q4_1.gguf}
VENV=target/guidellm-venv
TOKENIZER=target/guidellm-tokenizer
BIN=${CARGO_TARGET_DIR:-target}/release
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME="$PWD/target/guidellm-hf"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if ! { "$VENV/bin/guidellm" --version 2>/dev/null | grep -q "$GUIDELLM_VERSION" \
    && "$VENV/bin/python" -c "import gguf" 2>/dev/null; }; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "guidellm==$GUIDELLM_VERSION" "gguf==$GGUF_VERSION"
fi
if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
    [ -f "$GGUF" ] || { echo "no default model at $GGUF (run: factory fetch)" >&2; exit 1; }
    "$VENV/bin/python" - "$GGUF" "$TOKENIZER" <<'PY'
import os, sys
from transformers import AutoTokenizer
gguf, out = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
tok.save_pretrained(out)
PY
fi

cargo build --quiet --release -p factory-server --bin factory -p factory-benches --bin factory-bench

STATE=$(mktemp -d)
FACTORY_STATE_DIR="$STATE" RUST_LOG=info "$BIN/factory" serve --no-auth --addr 127.0.0.1:0 \
    2>"$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$STATE"' EXIT
ADDR=
for _ in $(seq 1 300); do
    ADDR=$(sed -n 's/.* on http:\/\/\([^ ]*\).*/\1/p' "$OUT/serve.log" | head -1)
    [ -n "$ADDR" ] && curl -sf "http://$ADDR/ping" >/dev/null && break
    kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log" >&2; exit 1; }
    sleep 0.2
done
[ -n "$ADDR" ] || { echo "factory serve did not start" >&2; exit 1; }
URL="http://$ADDR"
echo "factory serve on $URL; guidellm $GUIDELLM_VERSION; load: c in {$CONCURRENCY}, $REQUESTS requests," \
    "$PROMPT_TOKENS prompt tokens, $OUTPUT_TOKENS output tokens"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    echo "guidellm: $("$VENV/bin/guidellm" --version 2>/dev/null | tail -1); factory-bench: $("$BIN/factory-bench" --version)"
    echo "uptime before: $(uptime)"
} >"$OUT/machine.txt"

# Unmeasured warm-up so the first level does not pay for cold caches.
"$BIN/factory-bench" --url "$URL" --no-auth --api openai --concurrency 2 --requests 4 \
    --input-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" --ignore-eos \
    --temperature 1 --seed 999999 --quiet --out "$OUT/warmup" >/dev/null 2>&1

# The server's prefix-cache counters (prompt tokens looked up, tokens found).
cache_counters() {
    curl -sf "$URL/metrics" | awk '/^vllm:prefix_cache_queries_total/ {q += $2}
        /^vllm:prefix_cache_hits_total/ {h += $2} END {print q + 0, h + 0}'
}
run_guidellm() {
    echo "== concurrency $1: guidellm"
    cache_counters >"$OUT/guidellm-c$1.cache"
    "$VENV/bin/guidellm" run \
        --backend "kind=openai_http,target=$URL,model=$MODEL_ID,request_format=/v1/chat/completions" \
        --profile "kind=concurrent,streams=$1" \
        --constraint "kind=max_requests,count=$REQUESTS" \
        --data "kind=synthetic_text,prompt_tokens=$PROMPT_TOKENS,output_tokens=$OUTPUT_TOKENS" \
        --tokenizer "kind=hf_auto,model=$PWD/$TOKENIZER" \
        --seed "kind=static,value=$1" \
        --output "kind=json,path=$OUT/guidellm-c$1.json" \
        --output "kind=console" \
        --disable-console-interactive >"$OUT/guidellm-c$1.log" 2>&1 \
        || { tail -40 "$OUT/guidellm-c$1.log" >&2; exit 1; }
    cache_counters >>"$OUT/guidellm-c$1.cache"
}
run_factory_bench() {
    echo "== concurrency $1: factory-bench"
    cache_counters >"$OUT/factory-bench-c$1.cache"
    "$BIN/factory-bench" --url "$URL" --no-auth --api openai --concurrency "$1" --requests "$REQUESTS" \
        --input-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" --ignore-eos \
        --temperature 1 --seed "$1" --quiet --out "$OUT/factory-bench-c$1" >"$OUT/factory-bench-c$1.log" 2>&1 \
        || { tail -40 "$OUT/factory-bench-c$1.log" >&2; exit 1; }
    cache_counters >>"$OUT/factory-bench-c$1.cache"
}
# Both tools replay the same prompts for the same seed, and the server's prefix
# cache would then serve 144 of each prompt's 158 tokens from the second level
# on: a seed per level keeps every prompt new (only the chat template's first
# 16-token block is shared).
# Back to back per level, the order alternating (guidellm first at the first
# level), so neither tool always runs right after the other's load.
FIRST=${FIRST:-guidellm}
for C in $CONCURRENCY; do
    if [ $FIRST = guidellm ]; then
        run_guidellm "$C"; run_factory_bench "$C"; FIRST=factory-bench
    else
        run_factory_bench "$C"; run_guidellm "$C"; FIRST=guidellm
    fi
done
echo "uptime after: $(uptime)" >>"$OUT/machine.txt"

# What the server logged as a warning or error, less --no-auth's own notices.
grep -E ' (WARN|ERROR) ' "$OUT/serve.log" | grep -v -e 'authentication is off' -e '--no-auth' \
    >"$OUT/serve-warnings.log" || true
echo "server warnings/errors: $(wc -l <"$OUT/serve-warnings.log") (serve-warnings.log)" >>"$OUT/machine.txt"

python3 benches/third_party/guidellm_compare.py "$OUT" $CONCURRENCY | tee "$OUT/table.md"
cat "$OUT/machine.txt"
