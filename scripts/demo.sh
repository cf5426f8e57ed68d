#!/usr/bin/env bash
# The demo: starts the built-in HTTP target on a free loopback port, runs
# the hello-http scenario against it with 1,000 VUs for 15 seconds, prints
# the summary, and checks the runner's count against the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=target/release/runner
SCENARIO=target/scenarios/hello-http.wasm
[ -x "$RUNNER" ] && [ -f "$SCENARIO" ] || { echo "demo: run scripts/setup.sh first" >&2; exit 1; }

out=$(mktemp -d)
trap 'kill $target_pid 2>/dev/null || true; rm -rf "$out"' EXIT
"$RUNNER" target --listen 127.0.0.1:0 >"$out/target.log" &
target_pid=$!
for _ in $(seq 100); do grep -q listening "$out/target.log" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$out/target.log")
echo "demo: built-in target at $url"

"$RUNNER" run "$SCENARIO" --vus 1000 --duration 15s --ramp-up 2s -e BASE_URL="$url" --out json="$out/summary.json"

served=$(python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]+"/stats"))["requests"])' "$url")
sent=$(python3 -c 'import json,sys; print(sum(r["requests"] for r in json.load(open(sys.argv[1]))["http"]))' "$out/summary.json")
echo "demo: the runner sent $sent requests; the target counted $served"
