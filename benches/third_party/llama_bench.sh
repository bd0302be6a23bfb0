#!/usr/bin/env bash
# llama.cpp's own benchmark (llama-bench) on the same GGUF file factory uses, so
# factory's CPU prefill/decode speed can be compared with llama.cpp's on the
# same machine.
#
#   benches/third_party/llama_bench.sh [MODEL.gguf]   (default: factory's default model)
#   LLAMA_BENCH_ARGS="-n 128 -r 10" JOBS=2 benches/third_party/llama_bench.sh
#
# LLAMA_BENCH_ARGS is appended to `-t 2 -p 128 -n 64 -r 5`: list flags (-t, -p,
# -n) add tests, scalar ones (-r, -o) replace. llama.cpp's source comes from
# PyPI: the llama-cpp-python sdist (pinned below) vendors it under
# vendor/llama.cpp. The sdist is unpacked into target/llama.cpp/src and
# llama-bench and llama-perplexity are built (CPU only, Release, -march=native,
# static) into target/llama.cpp/build; both steps are skipped when done. Without
# cmake on PATH, cmake from PyPI goes into target/llama.cpp/venv. Nothing
# fetched is committed. Prints the llama.cpp commit, then llama-bench's table
# (pp128: prompt processing, tg64: decode; tokens/s, mean ± std of the runs).
set -euo pipefail
cd "$(dirname "$0")/../.."

LLAMA_CPP_PYTHON_VERSION=0.3.36
DIR=target/llama.cpp
SRC=$DIR/src
LLAMA=$SRC/vendor/llama.cpp
BUILD=$DIR/build
JOBS=${JOBS:-2}
SDIST=$DIR/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
mkdir -p "$DIR"

if [ ! -f "$LLAMA/CMakeLists.txt" ]; then
    # --no-binary for this package only: with :all: pip would also build the
    # sdist's build dependencies (cmake, ninja) from source to read its metadata.
    [ -f "$SDIST" ] || python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        -d "$DIR/sdist" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$SDIST" -C "$SRC" --strip-components=1 --no-same-owner
fi

if [ ! -x "$BUILD/bin/llama-bench" ] || [ ! -x "$BUILD/bin/llama-perplexity" ]; then
    CMAKE=$(command -v cmake || true)
    if [ -z "$CMAKE" ]; then
        [ -x "$DIR/venv/bin/cmake" ] || { python3 -m venv "$DIR/venv" && "$DIR/venv/bin/pip" install --quiet cmake; }
        CMAKE=$DIR/venv/bin/cmake
    fi
    "$CMAKE" -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF \
        -DGGML_METAL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
    "$CMAKE" --build "$BUILD" --config Release -j "$JOBS" --target llama-bench llama-perplexity
fi

MODEL=${1:-}
if [ -z "$MODEL" ]; then
    BIN=${CARGO_TARGET_DIR:-target}/release
    [ -x "$BIN/factory" ] || cargo build --release -p factory-server --bin factory
    MODEL=$("$BIN/factory" fetch-default-model | tail -n 1)
fi
[ -f "$MODEL" ] || { echo "no model at $MODEL" >&2; exit 1; }

# The sdist keeps the submodule's git HEAD (but no objects: llama-bench's
# "build: <commit> (<number>)" line has the right commit, not a real number).
echo "llama.cpp commit $(cat "$SRC/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null || echo unknown)," \
    "vendored in llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (PyPI sdist)"
echo "model: $MODEL"
# shellcheck disable=SC2086 # LLAMA_BENCH_ARGS is split on purpose
"$BUILD/bin/llama-bench" -m "$MODEL" -t 2 -p 128 -n 64 -r 5 ${LLAMA_BENCH_ARGS:-}
