#!/usr/bin/env bash
# The peers scripts/bench.py runs beside the runner, installed once and
# pinned: wrk (Debian) and oha (crates.io), and valgrind. Not needed by the tests.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
command -v wrk >/dev/null || $SUDO apt-get install -y -qq wrk
# callgrind, for the instructions per request (`bench.py --only instructions`).
command -v valgrind >/dev/null || $SUDO apt-get install -y -qq valgrind
if ! oha --version 2>/dev/null | grep -q "1.16.0"; then
    echo "installing oha 1.16.0 (a few minutes, once)"
    cargo install --quiet --locked oha --version 1.16.0
fi
echo "bench peers ready: $(wrk --version 2>&1 | head -1 | cut -c1-30); $(oha --version)"
