#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Run scripts/setup.sh first (the README's test command does both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
# One test at a time: several tests compare rates and latencies, which
# other tests running beside them on a 2-core machine would disturb.
cargo test --release --workspace -- --test-threads=1
# The libFuzzer targets (cargo fuzz), 20 s each, from the checks' seeds.
scripts/fuzz.sh
