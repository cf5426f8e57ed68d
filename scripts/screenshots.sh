#!/usr/bin/env bash
# Takes the README's screenshots of the live dashboard and the HTML report
# (tests/screenshots/*.png) by running the browser tests, which drive real
# runs against the built-in target. Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNNER_SCREENSHOTS="$PWD/tests/screenshots" \
    cargo test --release --test dashboard -- --test-threads=1
ls -l tests/screenshots
