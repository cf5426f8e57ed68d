#!/usr/bin/env bash
# Builds every example scenario to a component and copies it to
# target/scenarios/NAME.wasm (the documented folder).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wasm-env.sh
(cd scenarios && cargo component build --release --quiet --target "$WASM_TARGET")
mkdir -p target/scenarios
for dir in scenarios/*/; do
    name=$(basename "$dir")
    [ -f "$dir/Cargo.toml" ] || continue
    [ "$name" = target ] && continue
    cp "scenarios/target/$WASM_TARGET/release/${name//-/_}.wasm" "target/scenarios/$name.wasm"
done
# Python scenarios, with the Python guest SDK, by componentize-py (from
# the project's virtualenv, set up by scripts/setup.sh).
for py in scenarios/python/*.py; do
    name=$(basename "$py" .py)
    target/pyenv/bin/componentize-py -d wit -w load-test componentize \
        -p guest-sdk/python -p scenarios/python "$name" -o "target/scenarios/$name-py.wasm" >/dev/null
done
# JavaScript scenarios, with the JavaScript guest SDK, by its build script
# (esbuild and componentize-qjs from target/jsenv, set up by setup.sh).
for js in scenarios/js/*.js; do
    name=$(basename "$js" .js)
    RUNNER_JS_TOOLS=target/jsenv node guest-sdk/js/build.mjs "$js" -o "target/scenarios/$name-js.wasm" >/dev/null
done
ls target/scenarios
