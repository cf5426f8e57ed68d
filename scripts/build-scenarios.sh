#!/usr/bin/env bash
# Builds every example scenario to a component and copies it to
# target/scenarios/NAME.wasm (the documented folder).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wasm-env.sh
(cd scenarios && cargo component build --release --quiet)
mkdir -p target/scenarios
for dir in scenarios/*/; do
    name=$(basename "$dir")
    [ -f "$dir/Cargo.toml" ] || continue
    [ "$name" = target ] && continue
    cp "scenarios/target/wasm32-wasip1/release/${name//-/_}.wasm" "target/scenarios/$name.wasm"
done
ls target/scenarios
