#!/usr/bin/env python3
"""Benchmarks of the runner, printed as a Markdown table (paste into
BENCHMARKS.md). Run after scripts/setup.sh:

    scripts/bench.py [--quick]

1. Start-up: time and resident memory to start 1,000, 10,000 and (when
   vm.max_map_count allows it) 100,000 VUs of the `idle` scenario (VUs
   parked in a sleep).
2. HTTP: requests/s and client CPU microseconds per request, 50 connections
   (VUs) in a plain GET loop against a local nginx, side by side with
   `wrk -t1 -c50` against the same server.
3. Open model: the achieved arrival rate at 5,000/s, the scheduler's lag;
   and at 20,000/s (`--only open`): the whole run and each second after
   the first.
4. Messaging: MQTT QoS 0 and QoS 1 publishes/s (50 publisher VUs, no
   pause) against a local mosquitto, NATS publishes/s against a local
   nats-server, each with client CPU per message; and the resident memory
   of 10,000 idle MQTT device connections (one per VU) against the same
   10,000 VUs without connections.

5. The cost of watching (`--only watch`): client CPU per request of the
   HTTP run above, plain and with `--web` plus one event-stream client and
   a Prometheus scrape each second (medians of 3); and the size per second
   of a run's raw snapshot (`--out snapshots`), of its event-stream
   `snapshot` event and of its `totals` event, with 100 request names.

6. Distributed runs (`--only federation`): 50 VUs of hello-http with no
   pause for 10 s against nginx, run by a coordinator and 1, 2 and 3
   workers on this machine (which share its 2 cores): the aggregate rate
   and its ratio to one worker, the coordinator's CPU per worker-second,
   the bytes it receives per worker per second, the time from `runner
   join` to the target's first request, and the start skew reported.

7. Containment (`--only adversary`): 20 steady VUs of the chaos scenario
   (GET nginx, 10 ms think) for 10 s, alone and beside one VU that loops
   on a cheap host call (each iteration 250 ms, under `--cpu-limit`, so it
   is never ended: the worst case for its neighbours) and beside one that
   spins in guest code the same way, and beside a busy loop in another
   program (what any busy process costs them on this machine: the floor):
   the neighbours' requests and p99 as ratios to alone (five interleaved
   rounds, medians).

8. Guests in other languages (`--only guests`): memory (PSS plus page
   tables) per VU of
   the Python demo (hello-py, componentize-py) and the JavaScript one
   (hello-js, componentize-qjs) beside the Rust one (hello-http), each VU
   looping "GET, then sleep 1 s", at 50 and 200 VUs (the marginal KiB per
   VU between the two), with the time to start them and to compile the
   component with and without the on-disk cache; idle Python and JS VUs
   (idle-py, idle-js: sleep 1 s); then 5,000 Python VUs.

9. Connected VUs (`--only connected`, also in the default run): PSS plus
   page tables of
   hello-http VUs looping "GET, then sleep 1 s" at 1,000, 5,000 and
   10,000 VUs, and the marginal KiB per connected VU.

10. The sandbox's own cost (`--only sandbox`): the `cpu` scenario's mean
    iteration time (a sieve over 1 MiB, a 2-million-step hash, or either
    half) in the wide memory layout against the dense one, and with
    `--fuel`.

11. Instructions per request (`--only instructions`): user-space
    instructions of one request of hello-http (10 VUs, no pause, nginx)
    counted by callgrind, and where they go by component. Repeatable on a
    noisy machine where CPU time is not; the figure to compare before and
    after a change to the request path.

12. 100,000 connected VUs (`--only connected-100k`): hello-http looping
    "GET, then sleep 10 s" in one run with `--processes auto` (the
    open-files limit is 20,000 per process here) and 49 source addresses,
    against nginx (7 workers): the time until nginx counts 100,000
    connections, the memory of all the runner's processes, and the
    runner's request count beside nginx's.

The HTTP part runs oha beside wrk when it is installed
(`scripts/bench-setup.sh` installs both).

`--only messaging`, `--only http`, `--only watch`, `--only federation`,
`--only adversary`, `--only guests`, `--only connected`, `--only open`,
`--only sandbox`, `--only instructions` or `--only connected-100k` runs one
part.
"""

import statistics
import threading
import urllib.request

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "target/release/runner")
SCENARIOS = os.path.join(ROOT, "target/scenarios")
QUICK = "--quick" in sys.argv
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
HTTP_SECONDS = 5 if QUICK else 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def startup(vus, tmp):
    """Starts `vus` idle VUs at once; returns (startup seconds, RSS KiB once parked)."""
    out = os.path.join(tmp, f"idle-{vus}.json")
    hold = 6.0 if vus <= 10000 else 20.0
    p = subprocess.Popen(
        [RUNNER, "run", os.path.join(SCENARIOS, "idle.wasm"), "--vus", str(vus),
         "--duration", f"{hold}s", "--ramp-up", "0s", "--grace", "0s",
         "-e", "SLEEP_MS=600000", "--quiet", "--out", f"json={out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(hold - 1.0)
    rss = rss_kib(p.pid)
    _, err = p.communicate(timeout=120)
    if p.returncode != 0:
        sys.exit(f"bench: runner failed: {err.decode()}")
    meta = json.load(open(out))["meta"]
    return meta["startup_s"], rss


def start_nginx(tmp, port):
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return p
        except OSError:
            time.sleep(0.05)
    sys.exit("bench: nginx did not start")


def measure(cmd):
    """Runs cmd; returns (wall seconds, CPU seconds of the process, stdout)."""
    cpu0 = child_cpu()
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench: {cmd[0]} failed: {r.stderr}")
    return wall, child_cpu() - cpu0, r.stdout


def wrk_requests(text):
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "requests" and parts[0].isdigit():
            return int(parts[0])
    sys.exit("bench: cannot read wrk's request count")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_port(port, what):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not start")


def start_mosquitto(tmp, port):
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                "persistence false\nlog_type error\n")
    p = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    wait_port(port, "mosquitto")
    return p


def start_nats(port):
    p = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    wait_port(port, "nats-server")
    return p


def run_scenario(name, env, out):
    """Runs an example scenario quietly with `-e` values; returns (CPU seconds, summary)."""
    cmd = [RUNNER, "run", os.path.join(SCENARIOS, f"{name}.wasm"), "--quiet", "--out", f"json={out}"]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    _, cpu, _ = measure(cmd)
    return cpu, json.load(open(out))


def row(summary, proto, name):
    return next(r for r in summary[proto] if r["name"] == name)


def messaging(tmp, idle_rss):
    secs = HTTP_SECONDS
    port = free_port()
    mosq = start_mosquitto(tmp, port)
    try:
        for qos in (0, 1):
            cpu, s = run_scenario("mqtt-fan-in", {
                "MQTT_URL": f"mqtt://127.0.0.1:{port}", "SUBSCRIBERS": 0, "PUBLISHERS": 50,
                "MESSAGES": 10**9, "INTERVAL_MS": 0, "START_DELAY_MS": 0, "QOS": qos,
                "DURATION_S": secs}, os.path.join(tmp, f"mqtt{qos}.json"))
            r = row(s, "mqtt", "fanin")
            n = r["published"]
            print(f"| MQTT QoS {qos} publish, 50 VUs, {secs}s, mosquitto | {n / s['meta']['duration_s']:,.0f} msgs/s, "
                  f"{cpu * 1e6 / n:.1f} µs CPU/message, publish p99 {r['publish_ms']['p99']:.2f} ms ({r['failed']} failed) |")
        devices = 10000
        for per_vu, idle_rss in ((1, idle_rss[10000]), (10, idle_rss[1000])):
            vus = devices // per_vu
            out = os.path.join(tmp, f"iot-{per_vu}.json")
            hold = 20
            cmd = [RUNNER, "run", os.path.join(SCENARIOS, "iot.wasm"), "--quiet", "--out", f"json={out}",
                   "-e", f"MQTT_URL=mqtt://127.0.0.1:{port}", "-e", f"DEVICES={vus}",
                   "-e", f"DEVICES_PER_VU={per_vu}", "-e", "PERIOD_MS=600000",
                   "-e", f"DURATION_S={hold}", "--grace", "1s"]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(hold - 3)
            rss = rss_kib(p.pid)
            p.communicate(timeout=120)
            fleet = row(json.load(open(out)), "mqtt", "fleet")
            print(f"| {devices:,} idle MQTT connections, {per_vu} per VU ({vus:,} VUs, iot) | RSS {rss / 1024:.1f} MiB; "
                  f"{(rss - idle_rss) / devices:.1f} KiB per connection over {vus:,} idle VUs, "
                  f"{rss / devices:.1f} KiB per device all told ({fleet['connects']:,} connects, "
                  f"{fleet['failed']} failed, connect p99 {fleet['connect_ms']['p99']:.0f} ms) |")
    finally:
        mosq.terminate()
        mosq.wait()
    port = free_port()
    nats = start_nats(port)
    try:
        cpu, s = run_scenario("nats-pubsub", {
            "NATS_URL": f"nats://127.0.0.1:{port}", "WORKERS": 0, "SHOPS": 50, "ORDERS": 10**9,
            "INTERVAL_MS": 0, "START_DELAY_MS": 0, "DURATION_S": secs}, os.path.join(tmp, "nats.json"))
        r = row(s, "nats", "orders")
        n = r["published"]
        print(f"| NATS publish + flush, 50 VUs, {secs}s, nats-server | {n / s['meta']['duration_s']:,.0f} msgs/s, "
              f"{cpu * 1e6 / n:.1f} µs CPU/message, publish p99 {r['publish_ms']['p99']:.2f} ms ({r['failed']} failed) |")
    finally:
        nats.terminate()
        nats.wait()


def hundred_k():
    """The scale goal: 100,000 VUs in one process. Each VU costs a few
    kernel mappings, more than the default vm.max_map_count allows."""
    vus = 100_000
    needed = vus * 5 + 4096
    with open("/proc/sys/vm/max_map_count") as f:
        have = int(f.read())
    if have < needed:
        print(f"| start {vus:,} idle VUs | skipped: vm.max_map_count is {have:,}, needs {needed:,} "
              f"(`sudo sysctl -w vm.max_map_count=1048576`) |")
        return
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        secs, rss = startup(vus, tmp)
    print(f"| start {vus:,} idle VUs | {secs:.3f} s to all instantiated; RSS {rss / 1024:.1f} MiB ({rss / vus:.1f} KiB per VU) |")


class Watcher(threading.Thread):
    """Reads a run's event stream and scrapes /metrics each second,
    counting the bytes of each kind of event."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base = base
        self.bytes = {}
        self.count = {}

    def run(self):
        runs = None
        for _ in range(200):
            try:
                runs = json.load(urllib.request.urlopen(self.base + "/api/v1/runs", timeout=1))
                break
            except OSError:
                time.sleep(0.05)
        if not runs:
            return
        threading.Thread(target=self.scrape, daemon=True).start()
        url = f"{self.base}/api/v1/runs/{runs[0]['id']}/events"
        event = None
        try:
            for raw in urllib.request.urlopen(url, timeout=120):
                line = raw.decode()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event:
                    self.bytes[event] = self.bytes.get(event, 0) + len(line)
                    self.count[event] = self.count.get(event, 0) + 1
        except OSError:
            pass

    def scrape(self):
        while True:
            try:
                urllib.request.urlopen(self.base + "/metrics", timeout=1).read()
            except OSError:
                return
            time.sleep(1)


def http_run(url, tmp, web=False, names=0):
    """50 VUs of hello-http with no pause for HTTP_SECONDS; returns (µs CPU
    per request, summary, watcher or None, snapshots file)."""
    summary = os.path.join(tmp, "watch.json")
    snaps = os.path.join(tmp, "snapshots.ndjson")
    cmd = [RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"), "--vus", "50",
           "--duration", f"{HTTP_SECONDS}s", "--ramp-up", "0s", "-e", f"BASE_URL={url}",
           "-e", "THINK_MS=0", "-e", f"NAMES={names}", "--quiet", "--out", f"json={summary}"]
    if names:
        cmd += ["--out", f"snapshots={snaps}"]
    watcher = None
    if web:
        port = free_port()
        cmd += ["--web", f"127.0.0.1:{port}"]
    cpu0 = child_cpu()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if web:
        watcher = Watcher(f"http://127.0.0.1:{port}")
        watcher.start()
    _, err = p.communicate(timeout=300)
    if p.returncode != 0:
        sys.exit(f"bench: runner failed: {err.decode()}")
    cpu = child_cpu() - cpu0
    s = json.load(open(summary))
    n = sum(r["requests"] for r in s["http"])
    return cpu * 1e6 / n, s, watcher, snaps


def watch(url, tmp):
    plain, watched = [], []
    for _ in range(3):
        plain.append(http_run(url, tmp)[0])
        watched.append(http_run(url, tmp, web=True)[0])
    p, w = statistics.median(plain), statistics.median(watched)
    print(f"| runner 50 VUs, {HTTP_SECONDS}s, plain (median of 3) | {p:.2f} µs CPU/request |")
    print(f"| same with --web, one event-stream client, /metrics scraped each second | {w:.2f} µs CPU/request ({(w / p - 1) * 100:+.1f}%) |")
    _, s, watcher, snaps = http_run(url, tmp, web=True, names=100)
    secs = s["meta"]["duration_s"]
    lines = open(snaps).read().splitlines()
    raw = statistics.mean(len(l) for l in lines[1:-1]) if len(lines) > 2 else 0
    names = len(s["http"])
    print(f"| raw snapshot (`--out snapshots`), {names} request names | {raw / 1024:.1f} KiB per second |")
    for event in ("snapshot", "totals"):
        b = watcher.bytes.get(event, 0) if watcher else 0
        print(f"| event stream `{event}` events, {names} request names | {b / secs / 1024:.1f} KiB per second |")


def proc_cpu(pid):
    """CPU seconds of a live process (utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_read_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def target_requests(url):
    return json.load(urllib.request.urlopen(url + "/stats", timeout=2))["requests"]


def federated(n, url, tmp):
    """One coordinator and `n` workers; returns a dict of measurements."""
    summary = os.path.join(tmp, f"fed-{n}.json")
    coord = subprocess.Popen(
        [RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"), "--vus", "50",
         "--duration", f"{HTTP_SECONDS}s", "--ramp-up", "0s", "-e", f"BASE_URL={url}",
         "-e", "THINK_MS=0", "--workers", str(n), "--listen", "127.0.0.1:0", "--quiet",
         "--out", f"json={summary}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    join = None
    for line in coord.stderr:
        if "runner join --coordinator" in line:
            words = line.split()
            join = (words[words.index("--coordinator") + 1], words[words.index("--token") + 1])
            break
    if not join:
        sys.exit("bench: the coordinator did not print its join line")
    threading.Thread(target=lambda: coord.stderr.read(), daemon=True).start()
    # nginx serves a fixed page; its access log is off, so count the
    # coordinator's summary instead of the server for the rate, and read
    # the time to the first request from a target of our own.
    t0 = time.monotonic()
    workers = [subprocess.Popen([RUNNER, "join", "--coordinator", join[0], "--token", join[1],
                                 "--name", f"w{i}", "--capacity", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(n)]
    first = None
    seen0 = target_requests(FED_TARGET)
    cpu0 = cpu1 = w0 = w1 = None
    deadline = time.monotonic() + 120
    while coord.poll() is None and time.monotonic() < deadline:
        try:
            cpu = proc_cpu(coord.pid)
        except OSError:
            break
        if first is None:
            try:
                if target_requests(FED_TARGET) > seen0:
                    first = time.monotonic() - t0
                    cpu0, w0 = cpu, time.monotonic()
            except OSError:
                pass
        else:
            cpu1, w1 = cpu, time.monotonic()
        time.sleep(0.05)
    coord.wait(timeout=60)
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(timeout=30)
    s = json.load(open(summary))
    requests = sum(r["requests"] for r in s["http"])
    secs = max(1e-9, (w1 or 0) - (w0 or 0))
    return {
        "rate": requests / s["meta"]["duration_s"],
        "cpu_per_worker_s": ((cpu1 or 0) - (cpu0 or 0)) / (n * secs),
        "bytes_per_worker_s": sum(w["snapshot_bytes"] for w in s["meta"]["workers"]) / n,
        "first_request_s": first,
        "skew_ms": s["meta"].get("start_skew_ms"),
    }


FED_TARGET = None


def federation(url, tmp):
    """Rows for distributed runs of 1, 2 and 3 workers."""
    global FED_TARGET
    # The built-in target counts requests (for the time to the first one).
    port = free_port()
    target = subprocess.Popen([RUNNER, "target", "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    FED_TARGET = f"http://127.0.0.1:{port}"
    wait_port(port, "the target")
    try:
        rows = {n: federated(n, FED_TARGET, tmp) for n in (1, 2, 3)}
    finally:
        target.terminate()
        target.wait()
    base = rows[1]["rate"]
    for n, r in rows.items():
        print(f"| {n} worker(s), 50 VUs, {HTTP_SECONDS}s, built-in target | {r['rate']:,.0f} req/s ({r['rate'] / base:.2f}× one worker); "
              f"coordinator {r['cpu_per_worker_s'] * 1000:.1f} ms CPU per worker-second, {r['bytes_per_worker_s'] / 1024:.1f} KiB per snapshot per worker; "
              f"join → first request {r['first_request_s']:.2f} s; start skew ±{r['skew_ms']:.3f} ms |")


def adversary(url, tmp):
    """Steady VUs alone, beside a busy program outside the runner (the
    machine's own floor), and beside host-call loops or a guest spin; the
    configurations take turns, five rounds, medians."""
    configs = [("alone", []),
               ("a busy loop outside the runner (sh, the machine's floor)", []),
               ("one host-call loop VU", ["-e", "HOSTLOOP=1", "-e", "HOSTLOOP_MS=250"]),
               ("four host-call loop VUs", ["-e", "HOSTLOOP=4", "-e", "HOSTLOOP_MS=250"]),
               ("one guest spin VU (ended at --cpu-limit 2s)", ["-e", "SPIN=1"])]
    runs = {what: [] for what, _ in configs}
    for i in range(5):
        for what, extra in configs:
            out = os.path.join(tmp, f"adv-{i}.json")
            outside = None
            if "outside" in what:
                outside = subprocess.Popen(["sh", "-c", "while :; do :; done"])
            try:
                measure([RUNNER, "run", os.path.join(SCENARIOS, "chaos.wasm"), "--duration", f"{HTTP_SECONDS}s",
                         "--ramp-up", "0s", "-e", f"BASE_URL={url}", "-e", "STEADY=20", "-e", "THINK_MS=10",
                         "--quiet", "--out", f"json={out}"] + extra)
            finally:
                if outside:
                    outside.kill()
                    outside.wait()
            s = json.load(open(out))
            row = s["http"][0]
            runs[what].append((row["requests"], row["latency_ms"]["p99"], s.get("classes", {})))
    def med(what):
        r = runs[what]
        return statistics.median(x[0] for x in r), statistics.median(x[1] for x in r), r[-1][2]
    base_n, base_p99, _ = med("alone")
    print(f"| 20 steady VUs alone, {HTTP_SECONDS}s | {base_n:,.0f} requests, p99 {base_p99:.2f} ms |")
    for what, _ in configs[1:]:
        n, p99, classes = med(what)
        loop = classes.get("hostloop") or classes.get("spin") or {}
        cost = ""
        if loop:
            cost = (f"; the adversary: {loop.get('guest_cpu_ms', 0):,.0f} ms guest + "
                    f"{loop.get('host_cpu_ms', 0):,.0f} ms host CPU")
        print(f"| beside {what} | {n:,.0f} requests ({n / base_n:.2f}× alone), p99 {p99:.2f} ms "
              f"({p99 / base_p99:.2f}× alone){cost} |")


def open_fast(url, tmp, rate=20000):
    """The open model at 20,000 arrivals/s (400 VUs allocated, up to
    2,000): the whole run, and each second after the first (the warm-up,
    while 2,000 fresh connections are opened at once)."""
    summary, series = os.path.join(tmp, "open20k.json"), os.path.join(tmp, "open20k.ndjson")
    measure([RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"), "--rate", str(rate),
             "--duration", f"{HTTP_SECONDS}s", "--vus", "400", "--max-vus", "2000",
             "-e", f"BASE_URL={url}", "-e", "THINK_MS=0", "--quiet",
             "--out", f"json={summary}", "--out", f"ndjson={series}"])
    it = json.load(open(summary))["iterations"]
    n = it["ok"] + it["failed"]
    seconds = [json.loads(l) for l in open(series)]
    warm = [s["iterations"]["count"] for s in seconds[1:] if abs(s["interval"] - 1.0) < 0.01]
    print(f"| open model --rate {rate}, {HTTP_SECONDS}s, 400–2,000 VUs | {n / HTTP_SECONDS:,.0f} iterations/s "
          f"({(n / HTTP_SECONDS - rate) / rate * 100:+.2f}%), {it['dropped']:,} dropped, scheduler lag p99 "
          f"{it['scheduler_lag_ms']['p99'] * 1000:.0f} µs; after the first second: {min(warm):,}–{max(warm):,} per second |")


def sandbox(url, tmp):
    """The sandbox's own cost on CPU-bound code (the `cpu` scenario, one
    iteration at a time, 100/s for 4 s): mean iteration time in the wide
    memory layout (no bounds checks; up to ~8,000 VUs) and in the dense
    one (explicit checks; --max-vus 9000 forces it), and with --fuel;
    three alternating rounds, medians."""
    out = os.path.join(tmp, "cpu.json")

    def mean_ms(part, max_vus, extra=()):
        measure([RUNNER, "run", os.path.join(SCENARIOS, "cpu.wasm"), "-e", f"PART={part}",
                 "--rate", "100", "--vus", "5", "--max-vus", str(max_vus), "--duration", "4s",
                 "--quiet", "--out", f"json={out}", *extra])
        return json.load(open(out))["iterations"]["duration_ms"]["mean"]

    for part in ("both", "sieve", "hash"):
        wide, dense = [], []
        for _ in range(3):
            wide.append(mean_ms(part, 50))
            dense.append(mean_ms(part, 9000))
        w, d = statistics.median(wide), statistics.median(dense)
        print(f"| cpu iteration ({part}): wide layout / dense layout | {w:.2f} ms / {d:.2f} ms ({d / w:.2f}×) |")
    fuel = statistics.median(mean_ms("both", 50, ("--fuel", "10000000000")) for _ in range(3))
    print(f"| cpu iteration (both), wide layout with --fuel | {fuel:.2f} ms |")


def oha_run(url):
    """oha -c50 for HTTP_SECONDS against url: (req/s, CPU µs per request),
    or None when oha is not installed (scripts/bench-setup.sh installs it)."""
    if not shutil.which("oha"):
        return None
    wall, cpu, out = measure(["oha", "-z", f"{HTTP_SECONDS}s", "-c", "50", "--no-tui",
                              "--output-format", "json", url + "/"])
    summary = json.loads(out)
    n = sum(summary.get("statusCodeDistribution", {}).values())
    if n == 0:
        sys.exit("bench: oha made no requests")
    return n / summary["summary"]["total"], cpu * 1e6 / n


def connected(url, tmp):
    """Memory of VUs that have connected: hello-http looping "GET, then
    sleep 1 s", at 1,000, 5,000 and 10,000 VUs (10,000 connections fit
    the open-files limit of this machine, 20,000, with nginx's)."""
    raise_nofile()
    r = {}
    for vus in (1000, 5000, 10000):
        r[vus], secs = guest_rss("hello-http", vus, url, tmp, seconds=10, settle=8.5)
        print(f"| {vus:,} VUs GET + sleep 1 s | PSS + page tables {r[vus] / 1024:.0f} MiB, started in {secs:.2f} s |")
    print(f"| marginal PSS + page tables per connected VU (5k − 1k) / 4k | {(r[5000] - r[1000]) / 4000:.1f} KiB |")
    print(f"| marginal PSS + page tables per connected VU (10k − 5k) / 5k | {(r[10000] - r[5000]) / 5000:.1f} KiB |")


def descendants(pid):
    """`pid` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def nginx_status(port):
    """(active connections, requests served) from nginx's stub_status."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read().decode()
    active = int(re.search(r"Active connections:\s*(\d+)", text).group(1))
    requests = int(text.split("\n")[2].split()[2])
    return active, requests


def connected_100k(tmp):
    """The scale goal: 100,000 VUs that each keep an HTTP connection, in
    one run on this machine. One process may open 20,000 files here, so the
    run uses `--processes auto` (six), and 100,000 connections to one
    address need several source addresses (`--local-addr`: ~2,000 ports
    each, where the kernel's port search stays fast). nginx runs 7 workers
    on one reuseport address; its stub_status is the ground truth of
    connections and requests. VUs loop "GET, then sleep 10 s" (10,000
    requests/s at full strength; a 1 s pause would ask 100,000/s of 2
    cores)."""
    vus = 100_000
    with open("/proc/sys/vm/max_map_count") as f:
        have = int(f.read())
    if have < 1_000_000:
        print(f"| {vus:,} connected VUs | skipped: vm.max_map_count is {have:,} "
              f"(`sudo sysctl -w vm.max_map_count=1048576`) |")
        return
    raise_nofile()
    port = free_port()
    conf = os.path.join(tmp, "nginx-100k.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 7;
daemon off;
pid {tmp}/nginx-100k.pid;
error_log {tmp}/nginx-100k-error.log;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
        location = /status {{ stub_status; }}
    }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    try:
        wait_port(port, "nginx")
        polls = 0
        out = os.path.join(tmp, "connected-100k.json")
        t0 = time.monotonic()
        p = subprocess.Popen(
            [RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"), "--vus", str(vus),
             "--duration", "60s", "--grace", "1s", "--processes", "auto",
             "--local-addr", "127.0.0.2-127.0.0.50", "-e", f"BASE_URL=http://127.0.0.1:{port}",
             "-e", "THINK_MS=10000", "--quiet", "--out", f"json={out}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        all_in = None
        while time.monotonic() - t0 < 55:
            active, _ = nginx_status(port)
            polls += 1
            if active - 1 >= vus:
                all_in = time.monotonic() - t0
                break
            time.sleep(0.25)
        time.sleep(5)
        procs = descendants(p.pid)
        pss = sum(pss_kib(q) for q in procs)
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            sys.exit(f"bench: runner failed: {err.decode()[-3000:]}")
        _, served = nginx_status(port)
        polls += 1
        s = json.load(open(out))
        counted = sum(r["requests"] for r in s["http"])
        failed = sum(r.get("failed", 0) for r in s["http"])
        shown = f"{all_in:.1f} s" if all_in else "not within 55 s"
        print(f"| {vus:,} connected VUs (GET + sleep 10 s), {len(procs) - 1} processes | all connected "
              f"(nginx's count) {shown} after the runner started |")
        print(f"| … PSS + page tables of all the runner's processes, 5 s later | {pss / 1024 / 1024:.2f} GiB "
              f"({pss / vus:.1f} KiB per VU) |")
        print(f"| … requests: the runner counted / nginx served | {counted:,} / {served - polls:,} "
              f"({failed:,} failed) |")
    finally:
        nginx.terminate()
        nginx.wait()


# Where the user-space instructions of a request go, by component, from
# callgrind's self costs (file paths name the crate).
GROUPS = [("wasmtime", "wasmtime (component calls, fibers, traps)"), ("tokio", "tokio"),
          ("malloc.c", "malloc/free"), ("???", "guest code (JIT) and unnamed"),
          ("httparse", "httparse"), ("memmove", "memcpy"), ("host-api/src/client", "host HTTP client"),
          ("host-api/src/limits", "CPU budget"), ("host-api/src/recorder", "metrics recorder"),
          ("hdrhistogram", "histograms"), ("sip.rs", "SipHash"), ("hash", "hashing"),
          ("time.rs", "std time"), ("clock_gettime", "clock reads"), ("host-api", "host-api, other"),
          ("runner/src", "runner"), ("/rustc/", "core and std, inlined"), ("libc.so", "libc, other")]


def callgrind_run(url, tmp, seconds):
    """(instructions, requests, self cost by function) of 10 VUs of
    hello-http for `seconds` under callgrind."""
    out = os.path.join(tmp, f"cg.{seconds}.out")
    summary = os.path.join(tmp, f"cg.{seconds}.json")
    env = dict(os.environ, TOKIO_WORKER_THREADS="1")
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", RUNNER, "run",
                        os.path.join(SCENARIOS, "hello-http.wasm"), "--vus", "10", "--duration", f"{seconds}s",
                        "--ramp-up", "0s", "-e", f"BASE_URL={url}", "-e", "THINK_MS=0", "--quiet",
                        "--out", f"json={summary}"], env=env, capture_output=True, text=True, timeout=600)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or not m:
        sys.exit(f"bench: the runner under callgrind failed: {p.stderr[-2000:]}")
    n = sum(r["requests"] for r in json.load(open(summary))["http"])
    costs = {}
    ann = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", out],
                         capture_output=True, text=True).stdout
    for line in ann.splitlines():
        c = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if c and "PROGRAM TOTALS" not in line:
            costs[c.group(2)] = costs.get(c.group(2), 0) + int(c.group(1).replace(",", ""))
    return int(m.group(1)), n, costs


def instructions(url, tmp):
    """User-space instructions per request: 10 VUs of hello-http with no
    pause against nginx under callgrind, one tokio worker, for 2 s and for
    6 s; the difference over the difference in requests leaves start-up
    out. Repeatable where CPU time is not (a shared 2-core machine)."""
    if not shutil.which("valgrind"):
        print("| instructions per request | valgrind missing: run scripts/bench-setup.sh |")
        return
    i2, n2, c2 = callgrind_run(url, tmp, 2)
    i6, n6, c6 = callgrind_run(url, tmp, 6)
    per = (i6 - i2) / (n6 - n2)
    print(f"| user-space instructions per request (callgrind, (6 s − 2 s) / requests) | {per:,.0f} |")
    groups = {}
    for k in set(c2) | set(c6):
        name = next((g for pat, g in GROUPS if pat in k), "other")
        groups[name] = groups.get(name, 0) + c6.get(k, 0) - c2.get(k, 0)
    for name, v in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| … of which {name} | {v / (n6 - n2):,.0f} ({v / (i6 - i2) * 100:.1f}%) |")


def with_nginx(tmp, part):
    """Runs `part(url, tmp)` against a fresh local nginx."""
    port = free_port()
    nginx = start_nginx(tmp, port)
    try:
        part(f"http://127.0.0.1:{port}", tmp)
    finally:
        nginx.terminate()
        nginx.wait()


def pss_kib(pid):
    """Proportional set size (KiB) plus the process's page tables: resident
    memory with each shared page divided among its mappings. VUs all map
    their component's copy-on-write memory image, which VmRSS counts once
    per VU although it exists once (6 MiB × VUs for componentize-py); PSS
    counts what the machine holds. Page tables are kernel memory the
    process costs too (more with 4 GiB per linear memory), which PSS
    leaves out."""
    pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPTE:"):
                pss += int(line.split()[1])
    return pss


def guest_rss(scenario, vus, url, tmp, seconds=8, settle=7.0):
    """Memory (KiB, PSS) of `vus` VUs of `scenario` looping GET + sleep 1 s,
    once all started; and the seconds they took to start."""
    out = os.path.join(tmp, f"{scenario}-{vus}.json")
    p = subprocess.Popen(
        [RUNNER, "run", os.path.join(SCENARIOS, f"{scenario}.wasm"), "--vus", str(vus),
         "--duration", f"{seconds}s", "--ramp-up", "0s", "-e", f"BASE_URL={url}", "-e", "THINK_MS=1000",
         "--quiet", "--out", f"json={out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(settle)
    rss = pss_kib(p.pid)
    _, err = p.communicate(timeout=600)
    if p.returncode != 0:
        sys.exit(f"bench: runner failed: {err.decode()}")
    return rss, json.load(open(out))["meta"]["startup_s"]


def guests(url, tmp):
    cache = os.path.join(tmp, "cache")
    for scenario in ("hello-http", "hello-py", "hello-js"):
        env = dict(os.environ, RUNNER_CACHE_DIR=cache)
        times = []
        for _ in range(2):
            t0 = time.time()
            subprocess.run([RUNNER, "inspect", os.path.join(SCENARIOS, f"{scenario}.wasm")],
                           env=env, stdout=subprocess.DEVNULL, check=True)
            times.append(time.time() - t0)
        print(f"| {scenario}: load (compile) cold / cached | {times[0]:.2f} s / {times[1]:.2f} s |")
        small, _ = guest_rss(scenario, 50, url, tmp)
        big, secs = guest_rss(scenario, 200, url, tmp)
        print(f"| {scenario}: 200 VUs GET + sleep 1 s | PSS + page tables {big / 1024:.0f} MiB, "
              f"{(big - small) / 150:,.0f} KiB per VU (200 − 50), started in {secs:.2f} s |")
    for scenario in ("idle-py", "idle-js"):
        small, _ = guest_rss(scenario, 50, url, tmp)
        big, secs = guest_rss(scenario, 200, url, tmp)
        print(f"| {scenario}: 200 idle VUs (sleep 1 s) | PSS + page tables {big / 1024:.0f} MiB, "
              f"{(big - small) / 150:,.0f} KiB per VU (200 − 50), started in {secs:.2f} s |")
    raise_nofile()
    pss, secs = guest_rss("hello-py", 5000, url, tmp, seconds=40, settle=35.0)
    print(f"| hello-py: 5,000 VUs GET + sleep 1 s | PSS + page tables {pss / 1024 / 1024:.1f} GiB "
          f"({pss / 5000 / 1024:.2f} MiB per VU), started in {secs:.1f} s |")


def main():
    if ONLY in ("adversary", "watch", "guests", "connected", "open", "sandbox", "instructions"):
        tmp = tempfile.mkdtemp(prefix="runner-bench-")
        print("| measurement | value |")
        print("|---|---|")
        parts = {"adversary": adversary, "watch": watch, "guests": guests, "connected": connected,
                 "open": open_fast, "sandbox": sandbox, "instructions": instructions}
        with_nginx(tmp, parts[ONLY])
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if ONLY == "connected-100k":
        tmp = tempfile.mkdtemp(prefix="runner-bench-")
        print("| measurement | value |")
        print("|---|---|")
        connected_100k(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if ONLY == "federation":
        tmp = tempfile.mkdtemp(prefix="runner-bench-")
        print("| measurement | value |")
        print("|---|---|")
        federation(None, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if ONLY == "messaging":
        tmp = tempfile.mkdtemp(prefix="runner-bench-")
        print("| measurement | value |")
        print("|---|---|")
        idle = {}
        for vus in (1000, 10000):
            _, idle[vus] = startup(vus, tmp)
            print(f"| start {vus:,} idle VUs | RSS {idle[vus] / 1024:.1f} MiB ({idle[vus] / vus:.1f} KiB per VU) |")
        messaging(tmp, idle)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing: run scripts/setup.sh")
    tmp = tempfile.mkdtemp(prefix="runner-bench-")
    rows = []

    print("| measurement | value |")
    print("|---|---|")
    results = {}
    for vus in (1000, 10000):
        secs, rss = startup(vus, tmp)
        results[vus] = (secs, rss)
        print(f"| start {vus:,} idle VUs | {secs:.3f} s to all instantiated; RSS {rss / 1024:.1f} MiB ({rss / vus:.1f} KiB per VU) |")
    (_, r1), (_, r10) = results[1000], results[10000]
    print(f"| marginal RSS per idle VU (10k − 1k) / 9k | {(r10 - r1) / 9000:.1f} KiB |")
    hundred_k()

    port = free_port()
    nginx = start_nginx(tmp, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wall, cpu, out = measure(["wrk", "-t1", "-c50", f"-d{HTTP_SECONDS}s", url + "/"])
        n = wrk_requests(out)
        wrk = (n / wall, cpu * 1e6 / n)
        summary = os.path.join(tmp, "http.json")
        wall, cpu, _ = measure([RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"),
                                "--vus", "50", "--duration", f"{HTTP_SECONDS}s", "--ramp-up", "0s",
                                "-e", f"BASE_URL={url}", "-e", "THINK_MS=0", "--quiet",
                                "--out", f"json={summary}"])
        s = json.load(open(summary))
        n = sum(r["requests"] for r in s["http"])
        failed = sum(r["failed"] for r in s["http"])
        ours = (n / s["meta"]["duration_s"], cpu * 1e6 / n)
        print(f"| wrk -t1 -c50, {HTTP_SECONDS}s, GET nginx | {wrk[0]:,.0f} req/s, {wrk[1]:.1f} µs CPU/request |")
        print(f"| runner 50 VUs hello-http THINK_MS=0, {HTTP_SECONDS}s | {ours[0]:,.0f} req/s, {ours[1]:.1f} µs CPU/request ({failed} failed) |")
        print(f"| runner / wrk | {ours[0] / wrk[0]:.2f}× the rate, {ours[1] / wrk[1]:.2f}× the CPU per request |")
        oha = oha_run(url)
        if oha:
            print(f"| oha -c50, {HTTP_SECONDS}s, GET nginx | {oha[0]:,.0f} req/s, {oha[1]:.1f} µs CPU/request |")
            print(f"| runner / oha | {ours[0] / oha[0]:.2f}× the rate, {ours[1] / oha[1]:.2f}× the CPU per request |")
        else:
            print("| oha | not installed: run scripts/bench-setup.sh |")
        rate = 5000
        summary = os.path.join(tmp, "open.json")
        measure([RUNNER, "run", os.path.join(SCENARIOS, "hello-http.wasm"), "--rate", str(rate),
                 "--duration", f"{HTTP_SECONDS}s", "--vus", "50", "-e", f"BASE_URL={url}", "-e", "THINK_MS=0",
                 "--quiet", "--out", f"json={summary}"])
        it = json.load(open(summary))["iterations"]
        achieved = it["arrival_rate"]
        print(f"| open model --rate {rate}, {HTTP_SECONDS}s | {achieved:,.1f} arrivals/s ({(achieved - rate) / rate * 100:+.2f}%), "
              f"{it['ok'] + it['failed']:,} iterations, {it['dropped']} dropped, scheduler lag p99 {it['scheduler_lag_ms']['p99'] * 1000:.0f} µs, "
              f"iteration latency from scheduled start p99 {it['latency_ms']['p99']:.2f} ms |")
        open_fast(url, tmp)
        watch(url, tmp)
        connected(url, tmp)
    finally:
        nginx.terminate()
        nginx.wait()
    if ONLY != "http":
        messaging(tmp, {1000: r1, 10000: r10})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
