#!/usr/bin/env bash
# Sets up a fresh Debian machine for this project, idempotently: system
# packages, the Rust cargo tools, the wasm toolchain; then builds the runner
# (release) and the example scenarios, copied to target/scenarios/.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export SUDO
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# System packages: a C compiler (ring), the benchmark peers (nginx, wrk),
# the brokers (mosquitto, nats-server), a browser for the dashboard tests
# (chromium, chromium-driver).
APT_PACKAGES=(build-essential pkg-config ca-certificates python3 python3-venv nginx-light wrk mosquitto nats-server chromium chromium-driver)
# Node.js and npm for the JavaScript scenarios (18 or later), unless a
# Node.js with its own npm is there already (Debian's npm package would
# conflict with it).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    APT_PACKAGES+=(nodejs npm)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    apt_updated=1
fi
# Debian enables these services on install; the project starts its own.
for svc in nginx mosquitto nats-server; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

# A host Rust toolchain: rustup's if present, else Debian's (1.96).
if ! command -v cargo >/dev/null 2>&1; then
    say "no cargo found: installing Debian's Rust toolchain"
    [ -n "${apt_updated:-}" ] || $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web cargo-web >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"

# Cargo tools, pinned.
install_tool() { # binary crate version
    if ! "$1" --version 2>/dev/null | grep -q "$3"; then
        say "installing $2 $3 (a few minutes, once)"
        cargo install --quiet --locked "$2" --version "$3"
    fi
}
install_tool cargo-component cargo-component 0.21.1
install_tool wasm-tools wasm-tools 1.263.0

# Fuzzing (scripts/fuzz.sh): cargo-fuzz, and the nightly compiler its
# instrumented builds need, pinned in tests/fuzz/rust-toolchain.toml.
install_tool cargo-fuzz cargo-fuzz 0.13.1
if ! (cd tests/fuzz && rustc -V >/dev/null 2>&1); then
    if ! command -v rustup >/dev/null 2>&1; then
        echo "setup: the fuzz targets need rustup, for the nightly toolchain in tests/fuzz/rust-toolchain.toml: install it from https://rustup.rs" >&2
        exit 1
    fi
    say "installing the fuzzing toolchain (tests/fuzz/rust-toolchain.toml)"
    (cd tests/fuzz && rustup toolchain install)
fi

# Python tools the tests use, in a virtualenv of the project's own
# (target/pyenv), pinned: schemathesis checks the OpenAPI document against
# the running server; kubernetes-validate the deployment manifests;
# componentize-py builds the Python scenarios.
PY_TOOLS=(schemathesis==4.32.5 kubernetes-validate==1.37.0 componentize-py==0.25.1)
if ! target/pyenv/bin/python -c 'import sys' 2>/dev/null; then
    say "creating target/pyenv"
    python3 -m venv target/pyenv
fi
for tool in "${PY_TOOLS[@]}"; do
    if ! target/pyenv/bin/pip show "${tool%%==*}" 2>/dev/null | grep -q "^Version: ${tool##*==}$"; then
        say "installing $tool"
        target/pyenv/bin/pip install --quiet --disable-pip-version-check "$tool"
    fi
done

# JavaScript build tools, pinned (the versions `runner new --lang js`
# writes into a project's package.json), in target/jsenv: esbuild bundles
# a script with the SDK, componentize-qjs makes it a component.
JS_TOOLS=(componentize-qjs@0.4.5 esbuild@0.28.2)
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
    echo "setup: Node.js ${node_major} is too old for the JavaScript scenarios; install Node.js 18 or later" >&2
    exit 1
fi
for tool in "${JS_TOOLS[@]}"; do
    if ! grep -qs "\"version\": \"${tool##*@}\"" "target/jsenv/node_modules/${tool%@*}/package.json"; then
        say "installing ${JS_TOOLS[*]}"
        npm install --silent --no-audit --no-fund --save-exact --prefix target/jsenv "${JS_TOOLS[@]}"
        break
    fi
done

say "building the runner"
cargo build --release --workspace --quiet

say "building the example scenarios"
scripts/build-scenarios.sh
say "ready: runner at target/release/runner, scenario components in target/scenarios/"
