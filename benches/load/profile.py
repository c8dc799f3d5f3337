#!/usr/bin/env python3
"""Where a request's CPU goes (issue 14, item 1): CPU time per request of nginx as a plain
proxy and of authgate's public route, identify route (cache hit) and miss path, measured in one
run, and authgate's broken down with `perf` (software clock sampling, no call graphs: each
sample is charged to the function it landed in) into the parts of a request.

The proxies run with 1 worker pinned to CPU 0; wrk, the echo backend and the stand-in share
the rest. authgate is the `profiling` build (release with line tables).

Settings (environment): DURATION (6 s per measurement), CONNECTIONS (32), BASE_PORT (18700),
AUTHGATE (target/profiling/authgate), FREQ (perf samples/s, 1999), OUT (target/profile).
Writes OUT/profile.md (the table) and OUT/<scenario>.symbols.txt (the top functions).
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

DURATION = int(os.environ.get("DURATION", "6").rstrip("s"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
BASE = int(os.environ.get("BASE_PORT", "18700"))
BIN = os.environ.get("AUTHGATE", "target/profiling/authgate")
FREQ = os.environ.get("FREQ", "1999")
OUT = os.environ.get("OUT", "target/profile")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import CPUS, OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402
P_ECHO, P_RESOLVER, P_AUTHGATE, P_PLAIN = BASE, BASE + 1, BASE + 2, BASE + 3
HZ = os.sysconf("SC_CLK_TCK")

# Parts of a request, by the function a sample landed in (first match wins). With fat LTO
# much is inlined into its caller: a part is "code of these modules and what they inlined".
BUCKETS = [
    ("kernel (TCP, syscalls, wakeups)", r"^\[k\] "),
    ("nginx's own code", r"^ngx_"),
    ("authgate's own code (filters, connection guard)", r"authgate::"),
    ("allocation and copies (mimalloc, libc memcpy/memmove)", r"^_?mi_|mimalloc|memcpy|memmove|memset|^malloc|^free|^realloc|^cfree|^__libc|^_int_malloc|^_int_free|alloc::raw_vec|alloc::alloc"),
    ("clock reads (vDSO clock_gettime)", r"clock_gettime|^std::time|Instant::now"),
    ("downstream h1 read/parse (Pingora v1 server, httparse)", r"pingora_core::protocols::http::v1::server|httparse|pingora_core::protocols::http::server|pingora_core::apps|pingora_core::services|pingora_core::server|pingora_core::listeners"),
    ("upstream h1 write/read (Pingora v1 client)", r"pingora_core::protocols::http::v1::client|pingora_core::protocols::http::client"),
    ("upstream connection checkout/return (connectors, pool, idle watch)", r"pingora_core::connectors|pingora_pool|pingora_core::upstreams|pingora_load_balancing"),
    ("response forwarding and proxy phases (pingora_proxy)", r"pingora_proxy::"),
    ("header maps (http, pingora_http)", r"^<?http::|pingora_http::|pingora_core::protocols::http::v1::common"),
    ("bytes", r"bytes::"),
    ("timers (pingora_timeout)", r"pingora_timeout"),
    ("tokio (scheduling, I/O driver)", r"tokio::|mio::|pingora_runtime"),
    ("Pingora core, other (streams, digests, errors)", r"pingora"),
    ("std/core/libc, other", r"^core::|^std::|^alloc::|^<|^__|libc"),
]

P = Procs("profile")
log, die = P.log, P.die


def render(template, out, run, port):
    text = open(os.path.join(HERE, template)).read()
    # As root, nginx's workers would switch to `nobody`, who cannot write the run's folder;
    # temp paths of the modules this nginx has stay in the run's folder too.
    user = "user root root;" if os.geteuid() == 0 else ""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    v = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    extra = " ".join(f"{m}_temp_path {run}/{m};" for m in ("fastcgi", "uwsgi", "scgi")
                     if f"--without-http_{m}_module" not in v)
    text = (text.replace("@USER_LINE@", user).replace("@EXTRA_TEMP_PATHS@", extra)
            .replace("@DIR@", run).replace("@PORT@", str(port))
            .replace("@RESOLVER_PORT@", str(P_RESOLVER)).replace("@WORKERS@", "1")
            .replace("@BACKEND_PORT@", str(P_ECHO)))
    open(out, "w").write(text)


def render_authgate(run, port):
    """benches/load/authgate.yaml with 1 worker on `port`, written into `run`: its path."""
    conf = os.path.join(run, "authgate.yaml")
    text = open(os.path.join(HERE, "authgate.yaml")).read()
    for k, v in (("@WORKERS@", "1"), ("@DIR@", run), ("@PORT@", str(port)),
                 ("@RESOLVER_PORT@", str(P_RESOLVER)), ("@BACKEND_PORT@", str(P_ECHO))):
        text = text.replace(k, v)
    open(conf, "w").write(text)
    return conf


def ticks(pid):
    total = 0
    for p in [pid] + [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                     text=True).stdout.split()]:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total


def wrk(url, cookie, script=None, arg=None):
    argv = (["taskset", "-c", OTHER_CPUS] if OTHER_CPUS else []) + [
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    if script:
        argv += ["-s", script]
    argv.append(url)
    if arg:
        argv += ["--", arg]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    total = re.search(r"(\d+) requests in", out)
    if not total or "Non-2xx" in out or "Socket errors" in out:
        die(f"wrk: {out}")
    return int(total.group(1))


def measure(name, pid, url, cookie, script=None, arg=None, perf=None):
    """CPU microseconds per request over one wrk run (and a perf profile of it)."""
    wrk(url, cookie, script, (arg + "-warm") if arg else None)  # warm-up
    rec = None
    if perf:
        pids = [str(pid)] + subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                           text=True).stdout.split()
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", FREQ, "-p", ",".join(pids),
                                "-o", perf, "--", "sleep", str(DURATION)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = ticks(pid)
    n = wrk(url, cookie, script, arg)
    t1 = ticks(pid)
    if rec:
        rec.wait()
    us = (t1 - t0) / HZ / n * 1e6
    log(f"{name}: {n} requests, {us:.1f} us CPU each")
    return us


def buckets(perf_file, listing):
    out = subprocess.run(["perf", "report", "-i", perf_file, "--stdio", "--no-children",
                          "--sort", "sym", "--percent-limit", "0", "-q"],
                         capture_output=True, text=True, check=False).stdout
    parts = collections.OrderedDict((name, 0.0) for name, _ in BUCKETS)
    parts["unattributed"] = 0.0
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\[[k.]\])\s+(.*)", line)
        if not m:
            continue
        pct, kind, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        key = "[k] " + sym if kind == "[k]" else sym
        rows.append((pct, key))
        for name, pattern in BUCKETS:
            if re.search(pattern, key):
                parts[name] += pct
                break
        else:
            parts["unattributed"] += pct
    open(listing, "w").write("\n".join(f"{p:6.2f}% {s}" for p, s in rows[:80]) + "\n")
    return parts


def main():
    for tool in ("wrk", "perf", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"needs {tool} (apt-get install -y wrk linux-perf nginx-light)")
    if not os.access(BIN, os.X_OK):
        die(f"no {BIN}: run 'cargo build --profile profiling --bin authgate'")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = tempfile.mkdtemp(prefix="authgate-profile.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.makedirs(OUT, exist_ok=True)
    try:
        P.start("echo", [BIN, "echo", "--listen", f"127.0.0.1:{P_ECHO}"], OTHER_CPUS, run)
        P.start("standin", [BIN, "standin", "--listen", f"127.0.0.1:{P_RESOLVER}", "--users",
                            "conf/users.yaml", "--any-session-prefix", "bench-"], OTHER_CPUS, run)
        conf = render_authgate(run, P_AUTHGATE)
        ag = P.start("authgate", [BIN, "-c", conf], PROXY_CPUS, run)
        for f in ("nginx-common.conf", "nginx-http-common.conf"):
            render(f, os.path.join(run, f.replace("nginx-", "")), run, P_PLAIN)
        render("nginx-plain.conf", os.path.join(run, "nginx.conf"), run, P_PLAIN)
        ng = P.start("nginx", [nginx, "-p", run, "-e", os.path.join(run, "error.log"), "-c",
                               os.path.join(run, "nginx.conf")], PROXY_CPUS, run)
        for p in (P_ECHO, P_RESOLVER, P_AUTHGATE, P_PLAIN):
            P.wait_http(p, f"port {p}")
        time.sleep(0.5)
        # authgate's pid: the process taskset exec'd into.
        cookie = "session=demo-session-alice"
        rows = {}
        perf = os.path.join(run, "nginx-plain.data")
        us = measure("nginx-plain", ng.pid, f"http://127.0.0.1:{P_PLAIN}/hello", cookie, perf=perf)
        rows["nginx-plain"] = (us, buckets(perf, os.path.join(OUT, "nginx-plain.symbols.txt")))
        nonce = str(int(time.time()))
        for name, path, script in (("authgate-public", "/public/hello", None),
                                   ("authgate-identify (hit)", "/hello", None),
                                   ("authgate miss", "/hello", os.path.join(HERE, "miss.lua"))):
            perf = os.path.join(run, re.sub(r"\W+", "-", name) + ".data")
            us = measure(name, ag.pid, f"http://127.0.0.1:{P_AUTHGATE}{path}",
                         None if script else cookie, script, nonce + name[-4:] if script else None, perf)
            rows[name] = (us, buckets(perf, os.path.join(OUT, re.sub(r"\W+", "-", name) + ".symbols.txt")))
    finally:
        P.stop_all()
        shutil.rmtree(run, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    names = list(rows)
    lines = [f"Machine: {CPUS} cores ({cpu}); 1 worker pinned to CPU 0; wrk -t1 -c{CONNECTIONS}, "
             f"{DURATION} s per measurement; perf cpu-clock at {FREQ} Hz; {time.strftime('%Y-%m-%d')}.", "",
             "| CPU per request | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names),
             "| total (proxy CPU time / requests) | " + " | ".join(f"**{rows[n][0]:.1f} us**" for n in names) + " |"]
    for part in rows[names[0]][1]:
        cells = []
        for n in names:
            us, b = rows[n]
            cells.append(f"{us * b[part] / 100:.1f} ({b[part]:.0f}%)" if b[part] >= 0.5 else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "profile.md"), "w").write(report)
    print(report)


if __name__ == "__main__":
    main()
