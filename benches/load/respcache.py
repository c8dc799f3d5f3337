#!/usr/bin/env python3
"""authgate's per-route response cache against nginx's proxy_cache, serving the same cached
object: requests/s and CPU time per request, alternated rounds (nginx first, then authgate
first, ...) in one run, medians, ratios authgate/nginx (target: authgate's requests/s >= 1.0x
nginx's). Then memory: authgate's resident set before warming, after caching OBJECTS
distinct objects and after OBJECTS more; the second batch's growth over OBJECTS is the bytes
per cached object (the first batch's also carries the first requests' one-off costs). For
reference, what nginx's copies take on tmpfs.

The object is `GET /static/obj?h-cache-control=public%2C%20max-age%3D600`: the echo backend
turns each `h-<name>=<value>` query pair into a response header, and its JSON body (a few
hundred bytes) carries `seq`, the backend's count of requests, so a cached copy shows an old one.
nginx (nginx-respcache.conf) keeps its cache's files and keys zone on tmpfs; authgate has the
route `/static` with `cache: {ttl: 10m}` and a top-level `response_cache:`. Before measuring,
the second request of each proxy must be a hit (nginx: X-Cache-Status HIT; authgate: the same
`seq` twice).

The proxies run with 1 worker, pinned to CPU 0 as in `make profile`; wrk, the echo backend and
the resolver stand-in share the other CPUs. Everything listens on 127.0.0.1.

Settings (environment): AUTHGATE (target/release/authgate), ROUNDS (5), DURATION (5 s per
measurement), CONNECTIONS (32), OBJECTS (2000), BASE_PORT (18600: echo, +1 stand-in,
+2 authgate, +3 nginx), ONLY (unset: both; "nginx" or "authgate": that proxy alone, e.g. to
check the nginx half on a binary without the response cache), OUT (target/respcache).
Run from the repository's root (`make bench-respcache`). Writes OUT/respcache.md (the
report) and prints it.
"""

import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("BASE_PORT", "18600")
os.environ.setdefault("DURATION", "5")
import profile as prof  # noqa: E402  (wrk, ticks, render and the pinned layout of make profile)
from procs import CPUS, OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402

BIN = os.environ.get("AUTHGATE", "target/release/authgate")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
OBJECTS = int(os.environ.get("OBJECTS", "2000"))
ONLY = os.environ.get("ONLY", "")
OUT = os.environ.get("OUT", "target/respcache")
P_AUTHGATE, P_NGINX = prof.BASE + 2, prof.BASE + 3
CC = "h-cache-control=public%2C%20max-age%3D600"
OBJ = f"/static/obj?{CC}"
FILL_LIMIT = 120  # seconds, for filling one proxy with OBJECTS objects and checking them
NOISY = 0.25

P = Procs("respcache")
log, die = P.log, P.die

AUTHGATE_YAML = """\
# authgate for benches/load/respcache.py: the layout of benches/load/authgate.yaml, with one
# public route whose answers the response cache keeps.
pingora:
  threads: 1
  work_stealing: false
  pid_file: {dir}/authgate.pid
  upgrade_sock: {dir}/authgate_upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1

listen:
  - addr: 127.0.0.1:{port}

resolver:
  url: http://127.0.0.1:{resolver}/_resolver/resolve

access_log:
  enabled: false

upstreams:
  app:
    backends: [127.0.0.1:{backend}]

response_cache:
  max_bytes: 67108864
  max_object_bytes: 1048576

routes:
  - path: /static
    upstream: app
    auth: public
    cache:
      ttl: 10m
"""


class Client:
    """One keep-alive connection to a proxy."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, path):
        try:
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            die(f"GET {path} on port {self.port}: {e}")
        if r.status != 200:
            die(f"GET {path} on port {self.port}: {r.status} {body[:300]!r}")
        return r, body

    def close(self):
        self.conn.close()


def seq_of(path, resp, body, direct=False):
    """The backend's request count in an echo body; dies if there is none or, asked of the
    backend `direct`ly, if the backend did not turn `h-cache-control` into a header."""
    try:
        seq = json.loads(body).get("seq")
    except ValueError:
        seq = None
    if seq is None or (direct and resp.getheader("cache-control") is None):
        die(f"GET {path}: the answer has no `seq` or no Cache-Control header (got {body[:200]!r}): "
            f"{BIN}'s echo backend predates `h-<name>` query headers and `seq`; rebuild it")
    return seq


def backend_seq():
    """The echo backend's request count, asked directly (this request included)."""
    c = Client(prof.P_ECHO)
    path = f"/_count?{CC}"
    r, b = c.get(path)
    c.close()
    return seq_of(path, r, b, direct=True)


def rss(pid):
    """Resident set size of `pid` in bytes (VmRSS)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    die(f"no VmRSS for pid {pid}")


def tmpfs_bytes(folder):
    """What the files under `folder` take on tmpfs (allocated blocks, not lengths)."""
    total = 0
    for root, dirs, files in os.walk(folder):
        for f in files + dirs:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def wait_up(proc, port, what, run, hint=""):
    """Until `port` answers; if `proc` exits first, dies with the end of its log."""
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = open(os.path.join(run, f"{what}.log")).read()[-1500:]
            die(f"{what} exited with status {proc.returncode}{hint}; its log ends:\n{tail}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/_ready")
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    die(f"{what} did not answer on port {port} within 20 s")


def check_hit_nginx(port):
    """The object, twice: the second answer must be nginx's cached copy."""
    c = Client(port)
    r1, b1 = c.get(OBJ)
    seq_of(OBJ, r1, b1)
    r2, b2 = c.get(OBJ)
    c.close()
    status = r2.getheader("x-cache-status")
    if status != "HIT":
        die(f"nginx did not serve {OBJ} from its proxy_cache: X-Cache-Status {status!r} "
            f"(first answer: {r1.getheader('x-cache-status')!r})")
    log(f"nginx: {OBJ} is a cache hit ({len(b2)} byte body)")
    return len(b2)


def check_hit_authgate(port):
    """The object, twice: the second answer must carry the first one's `seq` (a cached copy).
    One retry 100 ms later, in case the copy is stored just after the first answer is sent."""
    c = Client(port)
    r, b = c.get(OBJ)
    seqs = [seq_of(OBJ, r, b)]
    for attempt in range(2):
        r, b = c.get(OBJ)
        seqs.append(seq_of(OBJ, r, b))
        if seqs[-1] == seqs[-2]:
            c.close()
            log(f"authgate: {OBJ} is a cache hit ({len(b)} byte body, seq {seqs[-1]})")
            return len(b)
        time.sleep(0.1)
    c.close()
    die(f"authgate did not serve /static/obj from its response cache (backend seq {seqs}): "
        "is the response_cache feature built?")


def fill(name, port, start=0):
    """Caches OBJECTS distinct objects (numbered from `start`): returns (X-Cache-Status, seq)
    of each first answer."""
    c = Client(port)
    deadline = time.time() + FILL_LIMIT
    first = []
    for i in range(OBJECTS):
        if time.time() > deadline:
            die(f"{name}: filling {OBJECTS} objects took over {FILL_LIMIT} s")
        path = f"/static/obj{start + i}?{CC}"
        r, b = c.get(path)
        first.append((r.getheader("x-cache-status"), seq_of(path, r, b)))
    c.close()
    log(f"{name}: {OBJECTS} objects cached in {FILL_LIMIT - (deadline - time.time()):.1f} s")
    return first


def recheck(name, port, first, hit):
    """Asks for the OBJECTS objects again; `hit(first, again)` says whether an answer was cached
    (both are (X-Cache-Status, seq)). Returns the number of hits."""
    c = Client(port)
    deadline = time.time() + FILL_LIMIT
    hits = 0
    for i in range(OBJECTS):
        if time.time() > deadline:
            die(f"{name}: checking {OBJECTS} objects took over {FILL_LIMIT} s")
        path = f"/static/obj{i}?{CC}"
        r, b = c.get(path)
        hits += hit(first[i], (r.getheader("x-cache-status"), seq_of(path, r, b)))
    c.close()
    return hits


def spread(xs):
    return max(xs) / min(xs) - 1 if xs and min(xs) > 0 else 0.0


def main():
    if ONLY not in ("", "nginx", "authgate"):
        die(f"ONLY={ONLY!r}: unset, nginx or authgate")
    tags = [t for t in ("nginx", "authgate") if not ONLY or t == ONLY]
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"needs {tool} (apt-get install -y wrk nginx-light)")
    if not os.access(BIN, os.X_OK):
        die(f"no {BIN}: run 'cargo build --release --bin authgate'")
    if OBJECTS < 1 or ROUNDS < 1:
        die("OBJECTS and ROUNDS must be at least 1")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = tempfile.mkdtemp(prefix="authgate-respcache.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    if not run.startswith("/dev/shm/"):
        log(f"no /dev/shm: nginx's cache files go to {run}, which may not be tmpfs")
    os.makedirs(OUT, exist_ok=True)
    ports = {"nginx": P_NGINX, "authgate": P_AUTHGATE}
    procs, body, mem = {}, {}, {}
    rows = {t: [] for t in tags}  # (us CPU per request, req/s) per round
    misses = {t: 0 for t in tags}  # requests that reached the backend during the rounds
    try:
        P.start("echo", [BIN, "echo", "--listen", f"127.0.0.1:{prof.P_ECHO}"], OTHER_CPUS, run)
        P.start("standin", [BIN, "standin", "--listen", f"127.0.0.1:{prof.P_RESOLVER}", "--users",
                            "conf/users.yaml"], OTHER_CPUS, run)
        if "nginx" in tags:
            for f in ("nginx-common.conf", "nginx-http-common.conf"):
                prof.render(f, os.path.join(run, f.replace("nginx-", "")), run, P_NGINX)
            prof.render("nginx-respcache.conf", os.path.join(run, "nginx.conf"), run, P_NGINX)
            procs["nginx"] = P.start("nginx", [nginx, "-p", run, "-e", os.path.join(run, "error.log"),
                                               "-c", os.path.join(run, "nginx.conf")], PROXY_CPUS, run)
        if "authgate" in tags:
            conf = os.path.join(run, "authgate.yaml")
            open(conf, "w").write(AUTHGATE_YAML.format(dir=run, port=P_AUTHGATE, resolver=prof.P_RESOLVER,
                                                       backend=prof.P_ECHO))
            procs["authgate"] = P.start("authgate", [BIN, "-c", conf], PROXY_CPUS, run)
        P.wait_http(prof.P_ECHO, "the echo backend")
        P.wait_http(prof.P_RESOLVER, "the resolver stand-in")
        backend_seq()  # dies here if this echo backend cannot shape the object
        for t in tags:
            hint = (" (does it know `response_cache:` and a route's `cache:`? is the response_cache "
                    "feature built?)") if t == "authgate" else ""
            wait_up(procs[t], ports[t], t, run, hint)
        time.sleep(0.3)

        # Memory first, before any load: authgate's resident set before warming, then after
        # OBJECTS distinct objects are cached; nginx's cache files on tmpfs for the same.
        if "authgate" in tags:
            mem["authgate_before"] = rss(procs["authgate"].pid)
            body["authgate"] = check_hit_authgate(P_AUTHGATE)
            first = fill("authgate", P_AUTHGATE)
            time.sleep(0.2)
            mem["authgate_after"] = rss(procs["authgate"].pid)
            # A second batch: its growth is the objects' alone, without the one-off costs of
            # the first requests (buffers, pools, the allocator's first pages).
            fill("authgate", P_AUTHGATE, OBJECTS)
            time.sleep(0.2)
            mem["authgate_after2"] = rss(procs["authgate"].pid)
            mem["authgate_hits"] = recheck("authgate", P_AUTHGATE, first, lambda a, b: a[1] == b[1])
        if "nginx" in tags:
            body["nginx"] = check_hit_nginx(P_NGINX)
            files0 = tmpfs_bytes(os.path.join(run, "cache"))
            first = fill("nginx", P_NGINX)
            time.sleep(0.2)
            mem["nginx_files"] = tmpfs_bytes(os.path.join(run, "cache")) - files0
            fill("nginx", P_NGINX, OBJECTS)  # the same number of objects as authgate holds
            mem["nginx_hits"] = recheck("nginx", P_NGINX, first,
                                        lambda a, b: a[0] != "HIT" and b[0] == "HIT")

        for t in tags:  # one unmeasured run each, so round 1 starts warm
            prof.wrk(f"http://127.0.0.1:{ports[t]}{OBJ}", None)
        for r in range(ROUNDS):
            # Alternate which goes first, so a drift in the machine's load hits both.
            for t in (tags if r % 2 == 0 else tags[::-1]):
                pid = procs[t].pid
                s0 = backend_seq()
                t0 = prof.ticks(pid)
                started = time.time()
                n = prof.wrk(f"http://127.0.0.1:{ports[t]}{OBJ}", None)
                took = time.time() - started
                us = (prof.ticks(pid) - t0) / prof.HZ / n * 1e6
                misses[t] += backend_seq() - s0 - 1
                rows[t].append((us, n / took))
                log(f"round {r + 1} {t}: {us:.1f} us CPU per request, {n / took:,.0f} req/s")
    finally:
        P.stop_all()
        shutil.rmtree(run, ignore_errors=True)

    print(report(tags, rows, misses, body, mem))


def report(tags, rows, misses, body, mem):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    med = {t: (statistics.median(x[0] for x in rows[t]), statistics.median(x[1] for x in rows[t]))
           for t in tags}
    lines = [f"Machine: {CPUS} cores ({cpu}); 1 worker pinned to CPU {PROXY_CPUS or '(none)'}; "
             f"wrk -t1 -c{prof.CONNECTIONS}, {ROUNDS} rounds of {prof.DURATION} s, alternated; "
             f"medians; {time.strftime('%Y-%m-%d')}. Object: `GET {OBJ}` (cached by both; "
             f"{2 * OBJECTS + 1} objects in each cache during the rounds). authgate: {BIN}.", ""]
    if len(tags) == 2:
        a, n = rows["authgate"], rows["nginx"]
        rps = med["authgate"][1] / med["nginx"][1]
        lines += [
            "| per request, cache hit | nginx proxy_cache | authgate response cache | ratio | "
            "rounds' authgate/nginx |",
            "|---|---:|---:|---:|---|",
            f"| requests/s | {med['nginx'][1]:,.0f} | {med['authgate'][1]:,.0f} | "
            f"**{rps:.2f}x** authgate/nginx (target >= 1.0x) | "
            + ", ".join(f"{x[1] / y[1]:.2f}" for x, y in zip(a, n)) + " |",
            f"| CPU time | {med['nginx'][0]:.1f} us | {med['authgate'][0]:.1f} us | "
            f"{med['authgate'][0] / med['nginx'][0]:.2f}x authgate/nginx (lower is better) | "
            + ", ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(a, n)) + " |",
        ]
    else:
        t = tags[0]
        lines += [f"ONLY={t}: {t} alone, no comparison.", "",
                  f"| per request, cache hit | {t} |", "|---|---:|",
                  f"| requests/s | {med[t][1]:,.0f} (rounds: "
                  + ", ".join(f"{x[1]:,.0f}" for x in rows[t]) + ") |",
                  f"| CPU time | {med[t][0]:.1f} us (rounds: "
                  + ", ".join(f"{x[0]:.1f}" for x in rows[t]) + ") |"]
    noisy = [f"{t} {what} {spread([x[i] for x in rows[t]]) * 100:.0f}% apart"
             for t in tags for i, what in ((1, "requests/s"), (0, "CPU/request"))
             if spread([x[i] for x in rows[t]]) > NOISY]
    lines += ["", "Requests that reached the backend during the measured rounds (all should be "
                  "hits): " + ", ".join(f"{t} {misses[t]}" for t in tags) + "."]
    if any(misses.values()):
        lines.append("**warning: some measured requests were not served from the cache**")
    if noisy:
        lines += ["", f"**noisy run: rounds differ by more than 25%; do not conclude from it** "
                      f"({'; '.join(noisy)})"]
    lines += ["", "Memory:", ""]
    if "authgate" in tags:
        before, after, after2 = (mem["authgate_before"], mem["authgate_after"],
                                 mem["authgate_after2"])
        lines.append(f"- authgate: resident set {before / 1024:,.0f} KiB before warming, "
                     f"{after / 1024:,.0f} KiB with {OBJECTS} distinct objects cached (and "
                     f"/static/obj), {after2 / 1024:,.0f} KiB with {2 * OBJECTS}: "
                     f"**{(after2 - after) / OBJECTS:,.0f} bytes per cached object** (the second "
                     f"batch's growth; {(after - before) / OBJECTS:,.0f} over the first, which "
                     f"includes one-off costs); {mem['authgate_hits']}/{OBJECTS} of the first "
                     f"batch were hits when asked again.")
    if "nginx" in tags:
        lines.append(f"- nginx, for reference: the cache files take {mem['nginx_files'] / OBJECTS:,.0f} "
                     f"bytes per object on tmpfs (not in its resident set; plus a node each in the "
                     f"10 MiB keys zone); {mem['nginx_hits']}/{OBJECTS} were hits when asked again.")
    lines.append("- One object's body: " + ", ".join(f"{body[t]} bytes through {t}" for t in tags)
                 + " (a JSON echo of the request; the headers are stored too).")
    for t in tags:
        if mem[f"{t}_hits"] != OBJECTS:
            lines.append(f"- **warning: only {mem[t + '_hits']}/{OBJECTS} objects were still cached "
                         f"in {t}; its bytes per object are not per cached object**")
    text = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "respcache.md"), "w").write(text)
    return text


if __name__ == "__main__":
    main()
