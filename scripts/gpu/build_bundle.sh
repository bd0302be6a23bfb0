#!/usr/bin/env bash
# Builds, here (no GPU needed), everything the GPU machine runs, into
# gpu-bundle/ at the repository root: the `factory` binary, the GPU benchmark
# binaries and the CUDA test binaries, all `--features cuda`, stripped and
# packed into gpu-bundle/bundle.tar.gz with a manifest. The device tool then
# carries it: run(command="bash scripts/gpu/run_on_device.sh tests",
# carry=["gpu-bundle"]); see kernels/cuda/NOTES.md.
#
#   scripts/gpu/build_bundle.sh            # everything
#   GPU_BUNDLE_LIMIT_MIB=60 scripts/gpu/build_bundle.sh
#
# The device tool sends the checkout the session started in plus carried
# paths, 64 MiB in all: the bundle must stay under GPU_BUNDLE_LIMIT_MIB (60)
# and the bundle plus the working tree under 63 MiB, or this fails.
# Bench binaries whose sources are not in this tree (a branch not merged yet),
# or that need the CUDA executor when it is not here, are skipped with a
# message; anything present that fails to build fails the script.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BUNDLE=$ROOT/gpu-bundle
LIMIT_MIB=${GPU_BUNDLE_LIMIT_MIB:-60}
TREE_LIMIT_MIB=63
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STAGE=$TARGET/gpu-bundle-stage
CARGO=(nice -n 19 cargo)

say() { printf '\n== %s\n' "$*"; }
die() { printf '\nbuild_bundle: ERROR: %s\n' "$*" >&2; exit 1; }

rm -rf "$STAGE" "$BUNDLE"
mkdir -p "$STAGE/bin" "$STAGE/tests" "$BUNDLE"
MANIFEST=$STAGE/MANIFEST
{
    echo "# gpu-bundle manifest"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_root=$ROOT"
    echo "commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
    echo "rustc=$(rustc --version)"
} >"$MANIFEST"

say "factory (release, --features cuda)"
"${CARGO[@]}" build --release -p factory-server --features cuda --bin factory
cp "$TARGET/release/factory" "$STAGE/bin/factory"
echo "bin factory" >>"$MANIFEST"

say "GPU benchmarks (release, --features cuda)"
HAVE_EXECUTOR=0
if [ -d engine/src/executor/cuda ] && grep -q 'CudaExecutor' engine/src/executor/mod.rs; then
    HAVE_EXECUTOR=1
fi
if ! grep -q '^cuda *=' benches/Cargo.toml; then
    die "benches/Cargo.toml has no \`cuda\` feature"
fi
for b in gpu_ceilings gpu_kernels_bench gpu_decode_bench gpu_offline_bench; do
    if [ ! -f "benches/src/bin/$b.rs" ]; then
        echo "SKIPPED $b: benches/src/bin/$b.rs is not in this tree (its branch is not merged)"
        echo "skipped $b not-in-tree" >>"$MANIFEST"
        continue
    fi
    case $b in gpu_decode_bench | gpu_offline_bench)
        if [ $HAVE_EXECUTOR = 0 ]; then
            echo "SKIPPED $b: the CUDA executor (engine/src/executor/cuda, branch cuda-exec) is not in this tree"
            echo "skipped $b no-executor" >>"$MANIFEST"
            continue
        fi
        ;;
    esac
    "${CARGO[@]}" build --release -p factory-benches --features cuda --bin "$b"
    cp "$TARGET/release/$b" "$STAGE/bin/$b"
    echo "bin $b" >>"$MANIFEST"
done

say "CUDA test binaries (release, --features cuda)"
# Release (not the test profile) so the dependencies built above are reused.
# Kept: every integration-test target whose name mentions cuda, and the two
# libraries' unit tests (run on the GPU with the filter `cuda`).
MSGS=$STAGE/test-build.jsonl
"${CARGO[@]}" test --release --no-run --features cuda -p factory-kernels -p factory-engine \
    --message-format=json >"$MSGS"
jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test == true)
       | [.package_id, .target.name, (.target.kind | join(",")), .executable] | @tsv' "$MSGS" |
    while IFS=$'\t' read -r pkg name kind exe; do
        # "path+file:///.../kernels#factory-kernels@0.1.0" (or the older "factory-kernels 0.1.0 (...)").
        if [[ $pkg == *#* ]]; then crate=${pkg##*#}; crate=${crate%%@*}; else crate=${pkg%% *}; fi
        crate=${crate#factory-}
        if [ "$kind" = lib ]; then
            dst="$crate-lib"
            filter=cuda
        elif [[ $name == *cuda* ]]; then
            dst="$crate-$name"
            filter=
        else
            continue
        fi
        cp "$exe" "$STAGE/tests/$dst"
        echo "test $dst $filter" >>"$MANIFEST"
        echo "  $dst <- $exe"
    done
grep -q '^test ' "$MANIFEST" || die "no CUDA test binaries found in cargo's output ($MSGS)"

say "strip and pack"
strip "$STAGE"/bin/* "$STAGE"/tests/*
rm -f "$MSGS"
du -b "$STAGE"/bin/* "$STAGE"/tests/* | awk '{printf "  %8.1f MiB  %s\n", $1 / 1048576, $2}'
tar -C "$STAGE" -czf "$BUNDLE/bundle.tar.gz" MANIFEST bin tests
cp "$MANIFEST" "$BUNDLE/MANIFEST"
size=$(du -b "$BUNDLE/bundle.tar.gz" | cut -f1)
size_mib=$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')
echo "bundle: gpu-bundle/bundle.tar.gz, $size_mib MiB (limit $LIMIT_MIB MiB)"
if [ "$size" -ge $((LIMIT_MIB * 1048576)) ]; then
    die "the bundle is $size_mib MiB, over the $LIMIT_MIB MiB limit: drop a binary or build with less debug info"
fi
# What else travels: tracked files and untracked files git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total_mib=$(awk -v s="$size" -v t="$tree" 'BEGIN { printf "%.1f", (s + t) / 1048576 }')
echo "working tree that travels: $(awk -v t="$tree" 'BEGIN { printf "%.1f", t / 1048576 }') MiB; with the bundle $total_mib MiB (limit 64, kept under $TREE_LIMIT_MIB)"
if [ $((size + tree)) -ge $((TREE_LIMIT_MIB * 1048576)) ]; then
    die "bundle + working tree = $total_mib MiB: over what the device tool carries"
fi
grep -q '^/gpu-bundle/' .gitignore || echo "note: gpu-bundle/ is not in .gitignore: it would travel twice"
echo
echo "ready. On the GPU machine (device tool):"
echo '  run(command="bash scripts/gpu/run_on_device.sh tests", carry=["gpu-bundle"], timeout_s=600)'
echo '  run(command="bash scripts/gpu/run_on_device.sh bench", carry=["gpu-bundle"], timeout_s=600)'
echo '  run(command="bash scripts/gpu/run_on_device.sh offline", carry=["gpu-bundle"], timeout_s=600)'
