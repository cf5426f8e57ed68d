#!/usr/bin/env bash
# Runs the libFuzzer targets in tests/fuzz/fuzz_targets/ through cargo
# fuzz, each for a bounded time, from corpora seeded with the checks' own
# seeds (and what earlier runs found, kept in target/fuzz/corpus/).
#
#   scripts/fuzz.sh                     every target, 20 s each (CI)
#   scripts/fuzz.sh TARGET SECONDS      one target, longer
#   scripts/fuzz.sh TARGET 0 FILE...    replay inputs (a crash's artifact)
#
# FUZZ_SANITIZER=address builds with AddressSanitizer (slower to build
# and run; the default, none, still catches panics, overflow, timeouts
# and runaway memory, which is what safe Rust decoders fail by).
# Run scripts/setup.sh first: it installs the pinned nightly toolchain
# (tests/fuzz/rust-toolchain.toml) and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
only="${1:-}"
seconds="${2:-20}"
shift $(( $# < 2 ? $# : 2 ))
inputs=()
for f in "$@"; do inputs+=("$(realpath "$f")"); done
out="$PWD/target/fuzz"
corpus="$out/corpus"

# Seeds from the checks' own seed lists (tests/fuzz/targets.rs).
FUZZ_CORPUS="$corpus" cargo test --release --quiet --test fuzz -- --ignored --exact \
    checks::targets::write_seed_corpus >/dev/null

cd tests/fuzz
fuzz=(cargo fuzz)
build=(--fuzz-dir "$PWD" --sanitizer "${FUZZ_SANITIZER:-none}" --release --debug-assertions --codegen-units 16 --target-dir "$out/build")
if [ -n "$only" ]; then targets=("$only"); else mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir "$PWD"); fi
"${fuzz[@]}" build "${build[@]}" ${only:+"$only"}
for t in "${targets[@]}"; do
    mkdir -p "$out/artifacts/$t"
    args=(-rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1
        -artifact_prefix="$out/artifacts/$t/")
    if [ "$seconds" = 0 ]; then
        "${fuzz[@]}" run "${build[@]}" "$t" "${inputs[@]}" -- "${args[@]}"
    else
        echo "fuzz: $t for ${seconds}s"
        "${fuzz[@]}" run "${build[@]}" "$t" "$corpus/$t" -- "${args[@]}" \
            -max_total_time="$seconds" 2>"$out/$t.log" || {
            tail -40 "$out/$t.log" >&2
            echo "fuzz: target $t failed; the input is in $out/artifacts/$t/ (replay: scripts/fuzz.sh $t 0 FILE)" >&2
            exit 1
        }
        grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$out/$t.log" | tr '\n' ' ' | sed "s/^/fuzz: $t: /"
        echo
    fi
done
