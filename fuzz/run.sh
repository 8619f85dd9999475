#!/usr/bin/env bash
# Fuzzes the control codec, the session engine and the rule parser with cargo-fuzz
# (libFuzzer), each for SECONDS (default 10), starting from the seeds in fuzz/seeds/
# and the corpus kept in fuzz/corpus/. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/. CI runs it briefly; a long run: bash fuzz/run.sh 3600
#
# The machine's toolchain is stable; cargo-fuzz passes unstable -Z flags, which
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept for this build only. The code is
# safe Rust, so coverage-guided fuzzing without a sanitizer (--sanitizer none) finds
# the panics, which is what we look for.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in codec session rules; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzzing $target for ${seconds}s"
    cargo fuzz run --sanitizer none -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
        grep -E "^(stat::number_of_executed_units|==|SUMMARY|thread)" || true
    # libFuzzer leaves the input of every crash here.
    if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
        echo "fuzz target $target crashed: see fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
