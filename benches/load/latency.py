#!/usr/bin/env python3
"""Latency at a fixed rate (issue 22, item 3): p50 / p99 / p99.9 of a cache hit, a public route
and a miss, at 50% and 80% of nginx's saturated rate, side by side with tuned nginx (the seed's
recipe tuned: nginx-tuned.conf) for the hit and the miss and nginx's plain proxy
(nginx-plain.conf) for the public route, in one run.

First each nginx's saturated rate is measured with wrk (closed loop, CONNECTIONS connections,
DURATION s). Then for each scenario and level, `benches/loadgen.rs` sends that fixed rate to
nginx and to authgate in turn (the order alternates by round), with coordinated-omission
correction: a request's latency runs from when it was due (see loadgen.rs). A run with any
socket error or non-2xx answer fails the benchmark.

The proxies run with 1 worker pinned to CPU 0 as in `make profile`; the load generator, the
echo backend and the resolver stand-in share the other CPUs (with 2 cores, one: what they
cost shows in every figure, the same for both proxies). Everything listens on 127.0.0.1.

Settings (environment): AUTHGATE (target/release/authgate), LOADGEN (the loadgen bench's
binary; found with cargo when unset), ROUNDS (2), SECS (10 s measured per run, after 1 s of
warm-up), LEVELS (0.5,0.8), LG_CONNS (64 connections), DURATION (5 s per saturation run),
CONNECTIONS (32, wrk's), BASE_PORT (18800: echo, +1 stand-in, +2 authgate, +3 plain nginx,
+4 tuned nginx), OUT (target/latency). Run from the repository's root (`make bench-latency`).
Writes OUT/latency.md and OUT/latency.json and prints the report.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("BASE_PORT", "18800")
os.environ.setdefault("DURATION", "5")
import profile as prof  # noqa: E402  (wrk, render and the pinned layout of make profile)
from procs import CPUS, OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402

BIN = os.environ.get("AUTHGATE", "target/release/authgate")
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SECS = float(os.environ.get("SECS", "10"))
LEVELS = [float(x) for x in os.environ.get("LEVELS", "0.5,0.8").split(",")]
LG_CONNS = os.environ.get("LG_CONNS", "64")
OUT = os.environ.get("OUT", "target/latency")
P_AUTHGATE, P_PLAIN, P_TUNED = prof.BASE + 2, prof.BASE + 3, prof.BASE + 4
COOKIE = "session=demo-session-alice"

P = Procs("latency")
log, die = P.log, P.die

# scenario: (baseline name, baseline port, authgate path, path on the baseline, miss?)
SCENARIOS = [
    ("hit", "tuned nginx", P_TUNED, "/hello", "/hello", False),
    ("public", "nginx plain proxy", P_PLAIN, "/public/hello", "/hello", False),
    ("miss", "tuned nginx", P_TUNED, "/hello", "/hello", True),
]


def loadgen_binary():
    found = os.environ.get("LOADGEN")
    if found:
        return found
    out = subprocess.run(["cargo", "bench", "--bench", "loadgen", "--no-run",
                          "--message-format=json"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("target", {}).get("name") == "loadgen" and msg.get("executable"):
            return msg["executable"]
    die(f"could not build the loadgen bench: {out.stderr[-2000:]}")


def fixed_rate(loadgen, port, path, rate, miss_prefix):
    env = dict(os.environ, LG_ADDR=f"127.0.0.1:{port}", LG_PATH=path, LG_RATE=str(rate),
               LG_SECS=str(SECS), LG_WARM="1", LG_CONNS=LG_CONNS)
    env.pop("LG_COOKIE", None)
    env.pop("LG_MISS", None)
    if miss_prefix:
        env["LG_MISS"] = miss_prefix
    else:
        env["LG_COOKIE"] = COOKIE
    argv = (["taskset", "-c", OTHER_CPUS] if OTHER_CPUS else []) + [loadgen]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    try:
        got = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        die(f"loadgen on port {port}: {out.stdout} {out.stderr}")
    if got["errors"] or got["non_2xx"] or not got["requests"]:
        die(f"loadgen on port {port} {path}: {got}")
    return got


def start_nginx(nginx, run, name, port):
    d = os.path.join(run, name)
    os.makedirs(d)
    for f in ("nginx-common.conf", "nginx-http-common.conf"):
        prof.render(f, os.path.join(d, f.replace("nginx-", "")), d, port)
    prof.render(f"nginx-{name}.conf", os.path.join(d, "nginx.conf"), d, port)
    P.start(f"nginx-{name}", [nginx, "-p", d, "-e", os.path.join(d, "error.log"), "-c",
                              os.path.join(d, "nginx.conf")], PROXY_CPUS, run)


def main():
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"needs {tool} (apt-get install -y wrk nginx-light)")
    if not os.access(BIN, os.X_OK):
        die(f"no {BIN}: run 'cargo build --release --bin authgate'")
    loadgen = loadgen_binary()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = tempfile.mkdtemp(prefix="authgate-latency.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.makedirs(OUT, exist_ok=True)
    results = {}  # (scenario, level, proxy) -> [loadgen answers]
    saturated = {}
    try:
        P.start("echo", [BIN, "echo", "--listen", f"127.0.0.1:{prof.P_ECHO}"], OTHER_CPUS, run)
        P.start("standin", [BIN, "standin", "--listen", f"127.0.0.1:{prof.P_RESOLVER}", "--users",
                            "conf/users.yaml", "--any-session-prefix", "bench-"], OTHER_CPUS, run)
        P.start("authgate", [BIN, "-c", prof.render_authgate(run, P_AUTHGATE)], PROXY_CPUS, run)
        start_nginx(nginx, run, "plain", P_PLAIN)
        start_nginx(nginx, run, "tuned", P_TUNED)
        for p in (prof.P_ECHO, prof.P_RESOLVER, P_AUTHGATE, P_PLAIN, P_TUNED):
            P.wait_http(p, f"port {p}")
        nonce = str(int(time.time()))
        # Saturated rates of the baselines (closed loop), after a warm-up run each.
        for name, port, script in (("hit", P_TUNED, None), ("public", P_PLAIN, None),
                                   ("miss", P_TUNED, os.path.join(HERE, "miss.lua"))):
            url = f"http://127.0.0.1:{port}/hello"
            arg = f"{nonce}-sat-{name}" if script else None
            prof.wrk(url, None if script else COOKIE, script, (arg + "-warm") if arg else None)
            saturated[name] = prof.wrk(url, None if script else COOKIE, script, arg) / prof.DURATION
            log(f"{name}: baseline saturated at {saturated[name]:.0f} requests/s")
        # Fill both answer caches for the hit scenario.
        for port in (P_AUTHGATE, P_TUNED):
            fixed_rate(loadgen, port, "/hello", 100, None)
        for r in range(ROUNDS):
            for scenario, base_name, base_port, ag_path, base_path, miss in SCENARIOS:
                for level in LEVELS:
                    rate = round(level * saturated[scenario])
                    order = [("nginx", base_port, base_path), ("authgate", P_AUTHGATE, ag_path)]
                    if r % 2:
                        order.reverse()
                    for proxy, port, path in order:
                        prefix = f"bench-{nonce}-{r}-{scenario}-{level}-{proxy}-" if miss else None
                        got = fixed_rate(loadgen, port, path, rate, prefix)
                        results.setdefault((scenario, level, proxy), []).append(got)
                        log(f"round {r + 1} {scenario} {level:.0%} ({rate}/s) {proxy}: "
                            f"p50 {got['p50_us']} us, p99 {got['p99_us']} us, "
                            f"p99.9 {got['p999_us']} us")
    finally:
        P.stop_all()
        shutil.rmtree(run, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    med = lambda runs, key: statistics.median(g[key] for g in runs)  # noqa: E731
    lines = [f"Machine: {CPUS} cores ({cpu}); each proxy 1 worker pinned to CPU 0; loadgen "
             f"({LG_CONNS} connections), echo and stand-in on the rest; {ROUNDS} rounds of "
             f"{SECS:g} s per cell, medians; {time.strftime('%Y-%m-%d')}.", "",
             "Saturated rates of the baselines (wrk, closed loop): " + ", ".join(
                 f"{s} {saturated[s]:.0f}/s" for s in saturated), "",
             "| scenario | load | rate/s | proxy | p50 µs | p99 µs | p99.9 µs | p99 authgate / baseline |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for scenario, base_name, *_ in SCENARIOS:
        for level in LEVELS:
            base = results[(scenario, level, "nginx")]
            ours = results[(scenario, level, "authgate")]
            rate = round(level * saturated[scenario])
            for proxy, runs in ((base_name, base), ("authgate", ours)):
                ratio = (f"**{med(ours, 'p99_us') / max(1, med(base, 'p99_us')):.2f}**"
                         if proxy == "authgate" else "")
                lines.append(f"| {scenario} | {level:.0%} | {rate} | {proxy} | "
                             f"{med(runs, 'p50_us'):.0f} | {med(runs, 'p99_us'):.0f} | "
                             f"{med(runs, 'p999_us'):.0f} | {ratio} |")
    report = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "latency.md"), "w").write(report)
    json.dump({"saturated": saturated, "runs": {f"{s}/{l}/{p}": v for (s, l, p), v in results.items()}},
              open(os.path.join(OUT, "latency.json"), "w"), indent=1)
    print(report)


if __name__ == "__main__":
    main()
