#!/usr/bin/env python3
"""Memory per open client connection (issue 22, item 1): authgate (public route) beside nginx's
plain proxy, in the same run.

For each state, a fresh authgate (benches/load/authgate.yaml, 1 worker) and a fresh nginx
(benches/load/nginx-plain.conf, 1 worker) are started and warmed up (a few requests on a
connection closed again); their resident memory (VmRSS of /proc/PID/status; nginx's worker
process) is the base. Then N loopback connections are opened to each and held in the state:

- `idle`: connected, nothing sent;
- `partial`: the request line and part of a header sent (no blank line);
- `served`: one request (`GET /public/hello`, `/hello` on nginx) answered, kept alive.

RSS is read again once it has stopped moving (polled until two reads 0.5 s apart agree within
1%, at most 4 s: authgate's `client.header_timeout` is 10 s), and the growth over the base
divided by N is the cost of one connection. Then every connection is closed and RSS is read
10 s later ("after close", against the base).

Settings (environment): CONNS (2000), AFTER (10 s), BASE_PORT (18800),
AUTHGATE (target/release/authgate), OUT (target/bench-conns). Writes OUT/conns.md (the table)
and OUT/conns.tsv.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CONNS = int(os.environ.get("CONNS", "2000"))
AFTER = float(os.environ.get("AFTER", "10"))
os.environ.setdefault("BASE_PORT", "18800")
BASE = int(os.environ["BASE_PORT"])
BIN = os.environ.get("AUTHGATE", "target/release/authgate")
OUT = os.environ.get("OUT", "target/bench-conns")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import CPUS, OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402
import profile as prof  # noqa: E402  (render, render_authgate: the layout of make profile)

P_ECHO, P_RESOLVER, P_AUTHGATE, P_PLAIN = BASE, BASE + 1, BASE + 2, BASE + 3
STATES = [
    ("idle", "connected, nothing sent"),
    ("partial", "request line and part of a header sent"),
    ("served", "one request served, kept alive"),
]

P = Procs("conns")
log, die = P.log, P.die


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    die(f"no VmRSS for {pid}")


def settled_rss(pid, limit=4.0):
    """RSS once two reads 0.5 s apart agree within 1% (or after `limit` seconds)."""
    deadline = time.time() + limit
    last = rss_kib(pid)
    while time.time() < deadline:
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) <= max(64, last // 100):
            return now
        last = now
    return last


def read_response(s):
    """Reads one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed before the response header")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed before the response body")
        body += chunk
    return int(lines[0].split()[1])


def request(path):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: conns.py\r\n\r\n".encode()


def open_conns(port, state, path):
    conns = []
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        conns.append(s)
        if state == "partial":
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag".encode())
        elif state == "served":
            s.sendall(request(path))
            status = read_response(s)
            if status != 200:
                die(f"port {port}: {path} answered {status}")
    return conns


def warm(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    for _ in range(5):
        s.sendall(request(path))
        if read_response(s) != 200:
            die(f"port {port}: {path} did not answer 200")
    s.close()


def nginx_worker(master):
    deadline = time.time() + 10
    while time.time() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                              text=True).stdout.split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    die("nginx started no worker")


def measure_state(state, run, nginx):
    """Fresh proxies; returns {proxy: (base, held, after)} in KiB."""
    procs = []
    ag = P.start("authgate", [BIN, "-c", os.path.join(run, "authgate.yaml")], PROXY_CPUS, run)
    ng = P.start("nginx", [nginx, "-p", run, "-e", os.path.join(run, "error.log"), "-c",
                           os.path.join(run, "nginx.conf")], PROXY_CPUS, run)
    procs += [ag, ng]
    try:
        P.wait_http(P_AUTHGATE, "authgate", "/public/hello")
        P.wait_http(P_PLAIN, "nginx", "/hello")
        targets = [("authgate", P_AUTHGATE, "/public/hello", ag.pid),
                   ("nginx", P_PLAIN, "/hello", nginx_worker(ng.pid))]
        out = {}
        for name, port, path, pid in targets:
            warm(port, path)
        time.sleep(0.5)
        for name, port, path, pid in targets:
            base = settled_rss(pid)
            conns = open_conns(port, state, path)
            held = settled_rss(pid)
            out[name] = [base, held, None, conns, pid]
        for name in out:
            for s in out[name][3]:
                s.close()
        time.sleep(AFTER)
        for name in out:
            out[name][2] = rss_kib(out[name][4])
        for name, (base, held, after, _, _) in out.items():
            log(f"{state} {name}: base {base} KiB, held {held} KiB "
                f"({(held - base) / CONNS:.1f} KiB a connection), {AFTER:g} s after close {after} KiB")
        return {n: tuple(v[:3]) for n, v in out.items()}
    finally:
        P.stop_all()
        P.started.clear()


def main():
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        die("needs nginx (apt-get install -y nginx-light)")
    if not os.access(BIN, os.X_OK):
        die(f"no {BIN}: run 'cargo build --release --bin authgate'")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = tempfile.mkdtemp(prefix="authgate-conns.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.makedirs(OUT, exist_ok=True)
    helpers = Procs("conns-helpers")
    rows = {}
    try:
        helpers.start("echo", [BIN, "echo", "--listen", f"127.0.0.1:{P_ECHO}"], OTHER_CPUS, run)
        helpers.start("standin", [BIN, "standin", "--listen", f"127.0.0.1:{P_RESOLVER}", "--users",
                                  "conf/users.yaml"], OTHER_CPUS, run)
        prof.render_authgate(run, P_AUTHGATE)
        for f in ("nginx-common.conf", "nginx-http-common.conf"):
            prof.render(f, os.path.join(run, f.replace("nginx-", "")), run, P_PLAIN)
        prof.render("nginx-plain.conf", os.path.join(run, "nginx.conf"), run, P_PLAIN)
        for p in (P_ECHO, P_RESOLVER):
            helpers.wait_http(p, f"port {p}")
        for state, _ in STATES:
            rows[state] = measure_state(state, run, nginx)
    finally:
        P.stop_all()
        helpers.stop_all()
        shutil.rmtree(run, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    with open(os.path.join(OUT, "conns.tsv"), "w") as f:
        f.write("state\tproxy\tbase_kib\theld_kib\tafter_kib\n")
        for state, _ in STATES:
            for name, (base, held, after) in rows[state].items():
                f.write(f"{state}\t{name}\t{base}\t{held}\t{after}\n")
    lines = [f"Run of {time.strftime('%Y-%m-%d')}. Machine: {CPUS} cores ({cpu}); 1 worker each; "
             f"{CONNS} loopback connections held per state, a fresh process per state; RSS "
             f"(VmRSS, nginx's worker) {AFTER:g} s after all are closed.", "",
             "| connections | authgate (public route) | nginx plain proxy |", "|---|---|---|"]
    for state, label in STATES:
        cells = [f"{(held - base) / CONNS:+.1f} KiB each"
                 for base, held, _ in (rows[state]["authgate"], rows[state]["nginx"])]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for state, label in STATES:
        cells = []
        for base, held, after in (rows[state]["authgate"], rows[state]["nginx"]):
            cells.append(f"{after / 1024:.1f} MiB (base {base / 1024:.1f}, peak {held / 1024:.1f}; "
                         f"{(after - base) / base * 100:+.0f}%)")
        lines.append(f"| RSS {AFTER:g} s after closing ({state}) | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "conns.md"), "w").write(table)
    print(table)


if __name__ == "__main__":
    main()
