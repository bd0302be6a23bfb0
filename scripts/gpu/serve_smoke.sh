#!/usr/bin/env bash
# GPU machine, from run_on_device.sh tests: `factory serve --backend cuda
# --random-weights` (Llama-3.2-1B shape, the fixture tokenizer with a minimal
# chat template beside it) must answer a Converse request with HTTP 200.
#   scripts/gpu/serve_smoke.sh PATH/TO/factory
set -u
FACTORY=${1:?usage: serve_smoke.sh FACTORY_BINARY}
PORT=${SMOKE_PORT:-18080}
d=/tmp/rw-1b
rm -rf "$d" && mkdir -p "$d"
cp benches/data/llama-3.2-1b-config.json "$d/config.json"
cp models/tests/fixtures/tokenizer_spm_tiny_hf/tokenizer.json "$d/"
python3 - models/tests/fixtures/tokenizer_spm_tiny_hf/tokenizer_config.json "$d/tokenizer_config.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
json.dump(cfg, open(sys.argv[2], "w"))
PY
"$FACTORY" serve --backend cuda --random-weights --model "$d" --addr "127.0.0.1:$PORT" --no-auth \
    --max-num-seqs 8 >/tmp/serve.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
ready=0
for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null; then ready=1; break; fi
    if ! kill -0 $pid 2>/dev/null; then echo "factory serve exited:"; cat /tmp/serve.log; exit 1; fi
    sleep 1
done
[ $ready = 1 ] || { echo "factory serve not ready after 120 s:"; tail -n 40 /tmp/serve.log; exit 1; }
code=$(curl -s -o /tmp/converse.json -w '%{http_code}' -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":[{"text":"hello"}]}],"inferenceConfig":{"maxTokens":16}}' \
    "http://127.0.0.1:$PORT/model/random/converse")
tail -n 20 /tmp/serve.log
echo "HTTP $code"
head -c 1500 /tmp/converse.json
echo
[ "$code" = 200 ]
