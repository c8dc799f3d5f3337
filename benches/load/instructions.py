#!/usr/bin/env python3
"""Instructions per request under callgrind (issue 14): a repeatable A/B for small changes on a
shared, noisy machine, where throughput rounds differ by 20-40%.

Each binary (AUTHGATE_A, and AUTHGATE_B when given) runs with 1 worker under
`valgrind --tool=callgrind`, beside the echo backend and the stand-in; a keep-alive client
sends REQUESTS requests per scenario (public route, identify route on a cached session, and a
miss with a new session each time); callgrind's counters are zeroed before and dumped after
each scenario, so start-up is not counted. Instructions of the background (timers, health
checks) during a scenario are counted with it: a few per mille.

Caveat: valgrind hides some CPU features (SHA-NI, for one), so code that dispatches on them
(the cache key's SHA-256) runs its portable path here and weighs more than on the machine.

Settings (environment): AUTHGATE_A (target/profiling/authgate), AUTHGATE_B (none),
REQUESTS (2000), BASE_PORT (18900). Prints a table; OUT/instructions.md (target/instructions).
The dumps stay in the printed run directory: `callgrind_annotate a.cg.PID.2` is the hit
scenario of A (parts 1, 2, 3: public, hit, miss).
"""

import glob
import http.client
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import Procs  # noqa: E402

A = os.environ.get("AUTHGATE_A", "target/profiling/authgate")
B = os.environ.get("AUTHGATE_B")
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
BASE = int(os.environ.get("BASE_PORT", "18900"))
OUT = os.environ.get("OUT", "target/instructions")
P_PROXY, P_RESOLVER, P_ECHO = BASE, BASE + 1, BASE + 2
P = Procs("instructions")


def load(n, path, cookie):
    c = http.client.HTTPConnection("127.0.0.1", P_PROXY, timeout=30)
    for i in range(n):
        c.request("GET", path, headers={"Cookie": cookie(i)})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            P.die(f"GET {path}: {r.status}")
    c.close()


def measure(binary, run, tag):
    conf = os.path.join(run, f"{tag}.yaml")
    text = open(os.path.join(HERE, "authgate.yaml")).read()
    for k, v in (("@WORKERS@", "1"), ("@DIR@", run), ("@PORT@", str(P_PROXY)),
                 ("@RESOLVER_PORT@", str(P_RESOLVER)), ("@BACKEND_PORT@", str(P_ECHO))):
        text = text.replace(k, v)
    open(conf, "w").write(text)
    out = os.path.join(run, f"{tag}.cg")
    # Names written out in every dump, so that callgrind_annotate can read each scenario's
    # dump on its own (compressed names refer back to the first dump).
    vg = P.start(tag, ["valgrind", "--tool=callgrind", "--compress-strings=no",
                       f"--callgrind-out-file={out}.%p", binary, "-c", conf], None, run)
    P.wait_http(P_PROXY, f"authgate {tag} under valgrind", limit=120)
    pid = None
    for _ in range(50):
        found = subprocess.run(["pgrep", "-f", f"valgrind.*{conf}"], capture_output=True,
                               text=True).stdout.split()
        # The valgrind launcher execs valgrind.bin: the pid that callgrind_control knows.
        if found:
            pid = found[-1]
            break
        time.sleep(0.1)
    if not pid:
        P.die("no valgrind process")
    nonce = str(int(time.time()))
    load(200, "/hello", lambda i: "session=demo-session-alice")  # warm: pools, the cache
    results = {}
    for name, path, cookie in (
        ("public", "/public/x", lambda i: "session=demo-session-alice"),
        ("identify (hit)", "/hello", lambda i: "session=demo-session-alice"),
        ("miss", "/hello", lambda i: f"session=bench-{tag}-{nonce}-{i}"),
    ):
        subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=False)
        load(REQUESTS, path, cookie)
        before = set(glob.glob(f"{out}.*"))
        subprocess.run(["callgrind_control", "-d", pid], capture_output=True, check=False)
        dump = None
        for _ in range(100):
            new = [f for f in set(glob.glob(f"{out}.*")) - before if os.path.getsize(f) > 0]
            if new:
                dump = new[0]
                break
            time.sleep(0.1)
        if not dump:
            P.die("callgrind wrote no dump")
        time.sleep(0.3)
        total = next(int(l.split()[1]) for l in open(dump) if l.startswith("summary:"))
        results[name] = total / REQUESTS
        P.log(f"{tag} {name}: {results[name]:,.0f} instructions per request")
    vg.terminate()
    vg.wait(timeout=30)
    return results


def main():
    for tool in ("valgrind", "callgrind_control"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            P.die(f"needs {tool}: apt-get install -y valgrind")
    run = tempfile.mkdtemp(prefix="authgate-instr.")
    P.log(f"callgrind dumps in {run}")
    try:
        P.start("echo", [A, "echo", "--listen", f"127.0.0.1:{P_ECHO}"], None, run)
        P.start("standin", [A, "standin", "--listen", f"127.0.0.1:{P_RESOLVER}", "--users",
                            "conf/users.yaml", "--any-session-prefix", "bench-"], None, run)
        P.wait_http(P_ECHO, "echo")
        P.wait_http(P_RESOLVER, "stand-in")
        cols = [("A", measure(A, run, "a"))]
        if B:
            cols.append(("B", measure(B, run, "b")))
    finally:
        P.stop_all()
    lines = [f"Instructions per request under callgrind, {REQUESTS} requests a scenario, "
             f"1 worker; A = {A}" + (f", B = {B}" if B else "") + ".", "",
             "| scenario | " + " | ".join(n for n, _ in cols) + (" | B / A |" if B else " |"),
             "|---|" + "---:|" * (len(cols) + (1 if B else 0))]
    for scenario in cols[0][1]:
        cells = [f"{r[scenario]:,.0f}" for _, r in cols]
        if B:
            cells.append(f"{cols[1][1][scenario] / cols[0][1][scenario]:.3f}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    os.makedirs(OUT, exist_ok=True)
    open(os.path.join(OUT, "instructions.md"), "w").write(report)
    print(report)


if __name__ == "__main__":
    main()
