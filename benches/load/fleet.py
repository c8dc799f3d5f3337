#!/usr/bin/env python3
"""Fleet benchmark (issue 13): two authgate instances and one Redis, on loopback.

Measures, in one run:
  calls      resolver calls per new session across the fleet: each session asked on A then on
             B, and as many asked on A and B at the same moment (target: 1 per session)
  purge      propagation of a purge from A to B, p50/p99/max over PURGES purges: from sending
             the admin purge to A until B's purge counter says it applied it (target p99 < 50 ms)
  hit        requests/s on a cached session, fleet mode on (instance A) against off (the same
             file without `fleet:`), alternated rounds, medians (target >= 0.95: a hit never
             touches Redis); and the same for misses, for information
The proxies under test run with 1 worker thread, pinned to CPU 0 when there are 2+ CPUs; wrk,
Redis, the stand-in and the echo backend share the other CPUs.

Settings (environment): ROUNDS (3), DURATION (5 s), WARMUP (1 s), CONNECTIONS (32),
SESSIONS (200), PURGES (1000), BASE_PORT (18600), AUTHGATE (target/release/authgate),
WRITE (auto: BENCHMARKS.md between its fleet-bench markers when ROUNDS>=3 and DURATION>=5;
1 always; 0 never), OUT (target/bench-fleet).
"""

import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5").rstrip("s"))
WARMUP = int(os.environ.get("WARMUP", "1").rstrip("s"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
SESSIONS = int(os.environ.get("SESSIONS", "200"))
PURGES = int(os.environ.get("PURGES", "1000"))
BASE = int(os.environ.get("BASE_PORT", "18600"))
BIN = os.environ.get("AUTHGATE", "target/release/authgate")
WRITE = os.environ.get("WRITE", "auto")
OUT = os.environ.get("OUT", "target/bench-fleet")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import CPUS, OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402
TOKEN = secrets.token_hex(16)
SESSION = "demo-session-alice"

P_ECHO, P_RESOLVER, P_REDIS = BASE, BASE + 1, BASE + 2
P_OFF, P_A, P_B = BASE + 10, BASE + 11, BASE + 12
P_ADMIN_OFF, P_ADMIN_A, P_ADMIN_B = BASE + 20, BASE + 21, BASE + 22

P = Procs("bench-fleet")
log, die = P.log, P.die


class Admin:
    """Keep-alive client of one instance's admin endpoint."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            die(f"admin {method} {path}: {r.status} {data[:200]!r}")
        return data

    def metric(self, series):
        text = self.call("GET", "/metrics").decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def fleet_purges(self):
        return json.loads(self.call("GET", "/cache/stats"))["purges"]["fleet"]


def get(port, cookie):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/hello", headers={"Cookie": cookie})
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        die(f"GET on {port}: {r.status}")
    return body


def redis_commands():
    """Commands Redis has processed so far (this INFO included)."""
    out = subprocess.run(["redis-cli", "-p", str(P_REDIS), "INFO", "stats"],
                         capture_output=True, text=True, check=False).stdout
    m = re.search(r"total_commands_processed:(\d+)", out)
    return int(m.group(1)) if m else 0


def render(run, name, port, admin_port, fleet):
    text = open(os.path.join(HERE, "authgate.yaml")).read()
    text = (
        text.replace("@WORKERS@", "1")
        .replace("@DIR@", run + "/" + name)
        .replace("@PORT@", str(port))
        .replace("@RESOLVER_PORT@", str(P_RESOLVER))
        .replace("@BACKEND_PORT@", str(P_ECHO))
    )
    os.makedirs(os.path.join(run, name), exist_ok=True)
    text += f"\nadmin:\n  listen: 127.0.0.1:{admin_port}\n  token_env: BENCH_ADMIN_TOKEN\n"
    if fleet:
        text += (
            "\nfleet:\n"
            f"  redis:\n    url: redis://127.0.0.1:{P_REDIS}/0\n"
            "  secret_env: BENCH_FLEET_SECRET\n"
            "  timeout: 20ms\n"
        )
    path = os.path.join(run, f"{name}.yaml")
    open(path, "w").write(text)
    return path


def wrk(port, script=None, args=()):
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s",
            "-H", f"Cookie: session={SESSION}"]
    if script:
        argv += ["-s", script]
    argv += [f"http://127.0.0.1:{port}/hello"]
    if args:
        argv += ["--"] + list(args)
    if OTHER_CPUS and shutil.which("taskset"):
        argv = ["taskset", "-c", OTHER_CPUS] + argv
    warm = list(argv)
    warm[warm.index(f"-d{DURATION}s")] = f"-d{WARMUP}s"
    if WARMUP > 0:
        subprocess.run(warm, capture_output=True, text=True, check=False)
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        die(f"wrk output without a rate:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if bad or errors:
        log(f"wrk on {port}: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}")
    return float(m.group(1))


def main():
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            die(f"needs {tool}: run 'sudo apt-get install -y {tool}', then retry")
    if not os.access(BIN, os.X_OK):
        die(f"no {BIN}: run 'cargo build --release --bin authgate' (or 'make bench-fleet')")
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    run = tempfile.mkdtemp(prefix="authgate-fleet.", dir=parent)
    env = dict(os.environ, BENCH_ADMIN_TOKEN=TOKEN, BENCH_FLEET_SECRET=secrets.token_hex(32),
               RUST_LOG="warn")
    started = time.time()
    try:
        P.start("redis", ["redis-server", "--port", str(P_REDIS), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", run], OTHER_CPUS, run)
        P.start("standin", [BIN, "standin", "--listen", f"127.0.0.1:{P_RESOLVER}", "--users",
                          "conf/users.yaml", "--any-session-prefix", "bench-"], OTHER_CPUS, run)
        P.start("echo", [BIN, "echo", "--listen", f"127.0.0.1:{P_ECHO}"], OTHER_CPUS, run)
        for name, port, admin, fleet in (("off", P_OFF, P_ADMIN_OFF, False),
                                         ("a", P_A, P_ADMIN_A, True),
                                         ("b", P_B, P_ADMIN_B, True)):
            conf = render(run, name, port, admin, fleet)
            P.start(name, [BIN, "-c", conf], PROXY_CPUS, run, env)
        for port, what in ((P_ADMIN_OFF, "authgate off"), (P_ADMIN_A, "authgate A"),
                           (P_ADMIN_B, "authgate B")):
            P.wait_http(port, what, "/health")
        a, b = Admin(P_ADMIN_A), Admin(P_ADMIN_B)
        deadline = time.time() + 10
        while a.metric("authgate_fleet_up") != 1 or b.metric("authgate_fleet_up") != 1:
            if time.time() > deadline:
                die("the fleet did not connect to Redis")
            time.sleep(0.05)
        for port in (P_OFF, P_A, P_B):
            if b"2b6e2d4a-alice" not in get(port, f"session={SESSION}"):
                die(f"no identity through port {port}")

        # Resolver calls per new session across the fleet.
        nonce = int(started)
        def calls():
            c = http.client.HTTPConnection("127.0.0.1", P_RESOLVER, timeout=5)
            c.request("GET", "/_standin/stats")
            # The stand-in counts these requests too: one between two readings.
            n = json.loads(c.getresponse().read())["requests"]
            c.close()
            return n

        c0 = calls()
        for i in range(SESSIONS):
            s = f"session=bench-fleet-{nonce}-seq-{i}"
            get(P_A, s)
            get(P_B, s)
        seq_calls = (calls() - c0 - 1) / SESSIONS
        c0 = calls()
        for i in range(SESSIONS):
            s = f"session=bench-fleet-{nonce}-par-{i}"
            ts = [threading.Thread(target=get, args=(p, s)) for p in (P_A, P_B)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        par_calls = (calls() - c0 - 1) / SESSIONS
        log(f"resolver calls per new session: {seq_calls:.3f} (A then B), {par_calls:.3f} (A and B at once)")

        # Purge propagation A -> B.
        lat = []
        for i in range(PURGES):
            before = b.fleet_purges()
            body = json.dumps({"cookie": f"session=bench-purge-{nonce}-{i}"})
            t0 = time.perf_counter()
            a.call("POST", "/cache/purge", body)
            while b.fleet_purges() <= before:
                if time.perf_counter() - t0 > 5:
                    die(f"purge {i} did not reach B in 5 s")
            lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        log(f"purge propagation over {PURGES}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {lat[-1]:.2f} ms")

        # Hits and misses, fleet on (A) against off, alternated.
        miss = os.path.join(HERE, "miss.lua")
        rates = {"hit-off": [], "hit-on": [], "miss-off": [], "miss-on": []}
        hit_commands = 0
        for r in range(ROUNDS):
            order = [("off", P_OFF), ("on", P_A)] if r % 2 == 0 else [("on", P_A), ("off", P_OFF)]
            for side, port in order:
                before = redis_commands()
                rates[f"hit-{side}"].append(wrk(port))
                if side == "on":
                    hit_commands += redis_commands() - before - 1
            for side, port in order:
                rates[f"miss-{side}"].append(wrk(port, miss, [f"fleet-{nonce}-{r}-{side}"]))
            log("round %d: %s" % (r + 1, ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())))
        med = {k: statistics.median(v) for k, v in rates.items()}
        spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in rates.items()}
        hit_ratio = med["hit-on"] / med["hit-off"]
        round_ratios = [on / off for on, off in zip(rates["hit-on"], rates["hit-off"])]
        hit_seconds = ROUNDS * (DURATION + WARMUP)
        miss_ratio = med["miss-on"] / med["miss-off"]
    finally:
        P.stop_all()
        shutil.rmtree(run, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    noisy = [k for k, s in spread.items() if s > 0.25]
    lines = [
        f"Machine: {CPUS} cores ({cpu}); proxies 1 worker, pinned to CPU 0"
        + ("" if PROXY_CPUS else " (not pinned: one CPU)")
        + f"; {ROUNDS} rounds of {DURATION} s, wrk -t1 -c{CONNECTIONS}; {time.strftime('%Y-%m-%d')}.",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
        f"| resolver calls per new session, asked on A then B ({SESSIONS} sessions) | {seq_calls:.3f} | 1 | {'yes' if seq_calls <= 1.0 else 'no'} |",
        f"| resolver calls per new session, asked on A and B at once ({SESSIONS} sessions) | {par_calls:.3f} | 1 where possible | {'yes' if par_calls <= 1.0 else 'no'} |",
        f"| purge A -> B, p50 / p99 / max ({PURGES} purges) | {p50:.2f} / {p99:.2f} / {lat[-1]:.2f} ms | p99 < 50 ms | {'yes' if p99 < 50 else 'no'} |",
        f"| hit req/s, fleet on / off (medians {med['hit-on']:.0f} / {med['hit-off']:.0f}) | {hit_ratio:.2f}x | >= 0.95x | {'yes' if hit_ratio >= 0.95 else 'no'} |",
        f"| hit: per-round ratios on / off | {', '.join(f'{x:.2f}' for x in round_ratios)} | - | - |",
        f"| Redis commands during {hit_seconds} s of hits with fleet on (2 instances' health checks: 2 a second each) | {hit_commands} | health checks only | {'yes' if hit_commands <= 4 * hit_seconds + 4 else 'no'} |",
        f"| miss req/s, fleet on / off (medians {med['miss-on']:.0f} / {med['miss-off']:.0f}) | {miss_ratio:.2f}x | (information) | - |",
    ]
    if noisy:
        lines += ["", f"Warning: rounds differ by more than 25% in {', '.join(noisy)}: "
                  "too noisy to conclude; run again on a quieter machine."]
    report = "\n".join(lines) + "\n"
    os.makedirs(OUT, exist_ok=True)
    open(os.path.join(OUT, "results.md"), "w").write(report)
    print(report)
    if WRITE == "1" or (WRITE == "auto" and ROUNDS >= 3 and DURATION >= 5):
        path = "BENCHMARKS.md"
        text = open(path).read()
        begin, end = "<!-- fleet-bench:begin", "<!-- fleet-bench:end -->"
        if begin in text and end in text:
            head = text[: text.index(begin)]
            tail = text[text.index(end):]
            marker = "<!-- fleet-bench:begin (generated by benches/load/fleet.py; edit outside the markers) -->\n"
            open(path, "w").write(head + marker + report + tail)
            log(f"wrote {path}")
        else:
            log(f"{path} has no fleet-bench markers; not written")


if __name__ == "__main__":
    main()
