# Source this file to get a toolchain that builds scenario components:
#   . scripts/wasm-env.sh && cargo component build --release --target "$WASM_TARGET"
#
# The one place that picks the wasm toolchain. It tries the normal path
# first (rustup's wasm32-wasip2 target, with a short timeout, for machines
# that reach rustup's servers) and otherwise uses Debian's Rust with its
# std sources (rustc-web, rust-web-src) and builds std for wasm32-wasip1
# itself (Debian's wasi-libc is built for preview 1 only).
# It sets WASM_TOOLCHAIN to "rustup" or "debian" (set it to "debian"
# beforehand to force the fallback) and WASM_TARGET to the target to
# build for: components land in target/$WASM_TARGET/release/.
#
# Why wasip2 where it can be had: its std speaks WASI 0.2 itself, so the
# component needs no wasip1 adapter; each VU then holds one core instance
# and one linear memory fewer (about 6 KiB less per connected VU).

_wasm_env_normal() {
    [ "${WASM_TOOLCHAIN:-}" = debian ] && return 1
    command -v rustup >/dev/null 2>&1 || return 1
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 && return 0
    timeout 30 rustup target add wasm32-wasip2 >/dev/null 2>&1
}

if _wasm_env_normal; then
    export WASM_TOOLCHAIN=rustup
    export WASM_TARGET=wasm32-wasip2
else
    if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust ] || [ ! -d /usr/lib/wasm32-wasi ] || [ ! -d /usr/lib/llvm-22/bin ]; then
        ${SUDO:-} apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 wasi-libc >/dev/null
    fi
    export WASM_TOOLCHAIN=debian
    export WASM_TARGET=wasm32-wasip1
    export RUSTC=/usr/bin/rustc
    export RUSTC_BOOTSTRAP=1
    export CARGO_UNSTABLE_BUILD_STD=std,panic_abort
    export PATH="/usr/lib/llvm-22/bin:$PATH"
    export RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no"
fi
unset -f _wasm_env_normal
