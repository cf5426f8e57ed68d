#!/usr/bin/env bash
# The demo, three short load tests on this machine only (loopback):
# 1. HTTP: the built-in target on a free port, the hello-http scenario with
#    1,000 VUs for 15 seconds, the runner's count checked against the
#    server's.
# 2. MQTT: a mosquitto broker on a free port, the iot scenario (200 devices
#    publishing every second and a dashboard subscribed to them) for 10 s,
#    the connections checked against the broker's log.
# 3. NATS: a nats-server on a free port, the nats-rpc scenario (responders
#    and requesters) for 8 s, the messages checked against the server's
#    monitoring counters.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=target/release/runner
SCENARIOS=target/scenarios
[ -x "$RUNNER" ] && [ -f "$SCENARIOS/hello-http.wasm" ] || { echo "demo: run scripts/setup.sh first" >&2; exit 1; }

out=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.1)' "$1" 2>/dev/null && return; sleep 0.05; done; echo "demo: nothing listens on port $1" >&2; exit 1; }
json() { python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($2)" "$1"; }

echo "== HTTP"
"$RUNNER" target --listen 127.0.0.1:0 >"$out/target.log" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$out/target.log" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$out/target.log")
echo "demo: built-in target at $url"
"$RUNNER" run "$SCENARIOS/hello-http.wasm" --vus 1000 --duration 15s --ramp-up 2s -e BASE_URL="$url" --out json="$out/http.json"
served=$(python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]+"/stats"))["requests"])' "$url")
sent=$(json "$out/http.json" 'sum(r["requests"] for r in s["http"])')
echo "demo: the runner sent $sent requests; the target counted $served"
[ "$sent" = "$served" ] || { echo "demo: counts differ" >&2; exit 1; }

echo "== MQTT"
port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nconnection_messages true\n' "$port" >"$out/mosquitto.conf"
mosquitto -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
pids+=($!)
wait_port "$port"
echo "demo: mosquitto at mqtt://127.0.0.1:$port"
"$RUNNER" run "$SCENARIOS/iot.wasm" -e MQTT_URL="mqtt://127.0.0.1:$port" -e DEVICES=200 -e DURATION_S=10 --out json="$out/mqtt.json"
connects=$(json "$out/mqtt.json" '[r for r in s["mqtt"] if r["name"]=="fleet"][0]["connects"]')
seen=$(grep -c "New client connected" "$out/mosquitto.log" || true)
echo "demo: the runner opened $connects MQTT connections; mosquitto logged $seen"
[ "$connects" = "$seen" ] || { echo "demo: counts differ" >&2; exit 1; }

echo "== NATS"
port=$(free_port)
mon=$(free_port)
nats-server -a 127.0.0.1 -p "$port" -m "$mon" >"$out/nats.log" 2>&1 &
pids+=($!)
wait_port "$port"
wait_port "$mon"
echo "demo: nats-server at nats://127.0.0.1:$port"
"$RUNNER" run "$SCENARIOS/nats-rpc.wasm" -e NATS_URL="nats://127.0.0.1:$port" -e DURATION_S=8 --out json="$out/nats.json"
moved=$(json "$out/nats.json" 'sum(r["requests"] + r["published"] for r in s["nats"])')
counted=$(python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]+"/varz"))["in_msgs"])' "http://127.0.0.1:$mon")
echo "demo: the runner sent $moved requests and replies; nats-server counted $counted messages in"
[ "$moved" = "$counted" ] || { echo "demo: counts differ" >&2; exit 1; }
echo "demo: all counts match"
