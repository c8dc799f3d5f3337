#!/usr/bin/env python3
"""A/B of two authgate binaries on the machine itself (issue 14): CPU time per request and
requests per second, alternated rounds (A B A B ...), medians. `make instructions` counts
instructions under callgrind, which is repeatable but weighs some code wrongly (a `rep movsb`
copy counts one instruction per byte, SHA-NI is hidden); this is the check that a change
seen there is real.

Both binaries run at once with 1 worker, pinned to CPU 0 as in `make profile`; only the one
under load works. wrk, the echo backend and the stand-in share the other CPUs.

Settings (environment): AUTHGATE_A, AUTHGATE_B (required), ROUNDS (5), DURATION (5 s),
CONNECTIONS (32), SCENARIOS ("public identify"; also "miss", and "cached": a response-cache
hit), BASE_PORT (18800).
Prints a table: medians and each round's B/A of CPU per request.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("BASE_PORT", "18800")
import profile as prof  # noqa: E402  (wrk, ticks and the pinned layout of make profile)
from procs import OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402

A = os.environ.get("AUTHGATE_A")
B = os.environ.get("AUTHGATE_B")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SCENARIOS = os.environ.get("SCENARIOS", "public identify").split()
P = Procs("ab")
PATHS = {"public": ("/public/hello", False), "identify": ("/hello", False), "miss": ("/hello", True),
         "cached": ("/static/obj?h-cache-control=public%2C%20max-age%3D600", False)}


def main():
    if not (A and B):
        P.die("set AUTHGATE_A and AUTHGATE_B to the two binaries")
    for s in SCENARIOS:
        if s not in PATHS:
            P.die(f"unknown scenario {s!r} (public, identify, miss, cached)")
    run = tempfile.mkdtemp(prefix="authgate-ab.")
    ports = {"a": prof.BASE + 2, "b": prof.BASE + 3}
    rows = {s: {"a": [], "b": []} for s in SCENARIOS}
    try:
        P.start("echo", [A, "echo", "--listen", f"127.0.0.1:{prof.P_ECHO}"], OTHER_CPUS, run)
        P.start("standin", [A, "standin", "--listen", f"127.0.0.1:{prof.P_RESOLVER}", "--users",
                            "conf/users.yaml", "--any-session-prefix", "bench-"], OTHER_CPUS, run)
        procs = {}
        for tag, binary in (("a", A), ("b", B)):
            conf = os.path.join(run, f"{tag}.yaml")
            text = open(os.path.join(HERE, "authgate.yaml")).read()
            for k, v in (("@WORKERS@", "1"), ("@DIR@", os.path.join(run, tag)),
                         ("@PORT@", str(ports[tag])), ("@RESOLVER_PORT@", str(prof.P_RESOLVER)),
                         ("@BACKEND_PORT@", str(prof.P_ECHO))):
                text = text.replace(k, v)
            os.makedirs(os.path.join(run, tag), exist_ok=True)
            open(conf, "w").write(text)
            procs[tag] = P.start(tag, [binary, "-c", conf], PROXY_CPUS, run)
        for p in (prof.P_ECHO, prof.P_RESOLVER, ports["a"], ports["b"]):
            P.wait_http(p, f"port {p}")
        nonce = str(int(time.time()))
        for r in range(ROUNDS):
            for s in SCENARIOS:
                path, miss = PATHS[s]
                # Alternate which goes first, so a drift in the machine's load hits both.
                for tag in (("a", "b") if r % 2 == 0 else ("b", "a")):
                    url = f"http://127.0.0.1:{ports[tag]}{path}"
                    cookie = None if miss else "session=demo-session-alice"
                    script = os.path.join(HERE, "miss.lua") if miss else None
                    arg = f"{nonce}{tag}{r}" if miss else None
                    prof.wrk(url, cookie, script, (arg + "-warm") if arg else None)
                    t0 = prof.ticks(procs[tag].pid)
                    started = time.time()
                    n = prof.wrk(url, cookie, script, arg)
                    took = time.time() - started
                    us = (prof.ticks(procs[tag].pid) - t0) / prof.HZ / n * 1e6
                    rows[s][tag].append((us, n / took))
                    P.log(f"round {r + 1} {s} {tag}: {us:.1f} us CPU per request, {n / took:,.0f} req/s")
    finally:
        P.stop_all()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    print(f"\nA = {A}, B = {B}; {cpu}; 1 worker pinned; {ROUNDS} rounds of {prof.DURATION} s, "
          f"alternated; medians.\n")
    print("| scenario | CPU/request A | CPU/request B | B/A | req/s A | req/s B | B/A | rounds' B/A (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for s in SCENARIOS:
        a, b = rows[s]["a"], rows[s]["b"]
        ca, cb = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        ra, rb = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
        per = ", ".join(f"{y[0] / x[0]:.2f}" for x, y in zip(a, b))
        print(f"| {s} | {ca:.1f} us | {cb:.1f} us | {cb / ca:.3f} | {ra:,.0f} | {rb:,.0f} | "
              f"{rb / ra:.3f} | {per} |")


if __name__ == "__main__":
    main()
