#!/usr/bin/env python3
"""Soak (issue 20): authgate under steady load while its resolver's nginx reloads gracefully,
which closes every idle kept-alive connection authgate holds to it at once, and while wrk's
clients go away at the end. Passes when no request failed and authgate logged no ERROR line.

Layout: wrk (2 threads) -> authgate -> echo backend; authgate's resolver is an nginx in front
of the stand-in (keep-alive both ways), reloaded RELOADS times during the run. Three requests
in four are cache hits, one a new session (a resolve).

Settings (environment): AUTHGATE (the binary; default target/release/authgate), DURATION
(40 s), RELOADS (2), CONNECTIONS (32), WORKERS (1), BASE_PORT (18900).
Prints the counts and exits 1 on any failure.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import OTHER_CPUS, PROXY_CPUS, Procs  # noqa: E402

AUTHGATE = os.environ.get("AUTHGATE", "target/release/authgate")
DURATION = int(os.environ.get("DURATION", "40"))
RELOADS = int(os.environ.get("RELOADS", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
WORKERS = os.environ.get("WORKERS", "1")
BASE = int(os.environ.get("BASE_PORT", "18900"))
P_ECHO, P_STANDIN, P_NGINX, P_PROXY = BASE, BASE + 1, BASE + 2, BASE + 3
P = Procs("soak")

NGINX = """
worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/nginx-body;
    proxy_temp_path {run}/nginx-proxy;
    fastcgi_temp_path {run}/nginx-fastcgi;
    uwsgi_temp_path {run}/nginx-uwsgi;
    scgi_temp_path {run}/nginx-scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream standin {{
        server 127.0.0.1:{standin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://standin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def main():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx) or not shutil.which("wrk"):
        P.die("needs nginx and wrk: apt-get install -y nginx-light wrk")
    run = tempfile.mkdtemp(prefix="authgate-soak.")
    try:
        P.start("echo", [AUTHGATE, "echo", "--listen", f"127.0.0.1:{P_ECHO}"], OTHER_CPUS, run)
        P.start("standin", [AUTHGATE, "standin", "--listen", f"127.0.0.1:{P_STANDIN}", "--users",
                            "conf/users.yaml", "--any-session-prefix", "bench-"], OTHER_CPUS, run)
        conf = os.path.join(run, "nginx.conf")
        open(conf, "w").write(NGINX.format(run=run, standin=P_STANDIN, port=P_NGINX))
        P.start("nginx", [nginx, "-c", conf], OTHER_CPUS, run)
        text = open(os.path.join(HERE, "authgate.yaml")).read()
        for k, v in (("@WORKERS@", WORKERS), ("@DIR@", run), ("@PORT@", str(P_PROXY)),
                     ("@RESOLVER_PORT@", str(P_NGINX)), ("@BACKEND_PORT@", str(P_ECHO))):
            text = text.replace(k, v)
        aconf = os.path.join(run, "authgate.yaml")
        open(aconf, "w").write(text)
        proxy = P.start("authgate", [AUTHGATE, "-c", aconf], PROXY_CPUS, run,
                        env=dict(os.environ, RUST_LOG="info,authgate::resolver=debug"))
        for port in (P_ECHO, P_STANDIN, P_NGINX, P_PROXY):
            P.wait_http(port, f"port {port}")
        argv = (["taskset", "-c", OTHER_CPUS] if OTHER_CPUS else []) + [
            "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "-s",
            os.path.join(HERE, "soak.lua"), f"http://127.0.0.1:{P_PROXY}/", "--",
            str(int(time.time()))]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        master = int(open(os.path.join(run, "nginx.pid")).read())
        for i in range(RELOADS):
            time.sleep(DURATION / (RELOADS + 1))
            os.kill(master, 1)  # SIGHUP: nginx's graceful reload
            P.log(f"nginx reloaded ({i + 1} of {RELOADS})")
        out, _ = load.communicate(timeout=DURATION + 60)
        time.sleep(1)  # authgate logs what wrk's last requests came to
        if proxy.poll() is not None:
            P.die(f"authgate exited: {proxy.returncode}")
    finally:
        P.stop_all()
    line = next((l for l in out.splitlines() if l.startswith("SOAK ")), None)
    if not line:
        P.die(f"wrk printed no summary:\n{out}")
    r = json.loads(line[5:])
    log = open(os.path.join(run, "authgate.log")).read().splitlines()
    errors = [l for l in log if " ERROR " in l]
    # The resolver client's retries (debug lines): the reloads' stale connections, met.
    retries = sum(1 for l in log if "reused connection failed" in l)
    failed = sum(n for code, n in r["statuses"].items() if not code.startswith("2"))
    socket = r["connect"] + r["read"] + r["write"] + r["timeout"]
    print(f"soak: {r['requests']} requests in {DURATION} s, {RELOADS} resolver reloads; "
          f"statuses {r['statuses']}; socket errors {socket}; p99 {r['p99_ms']} ms; "
          f"resolves retried on a new connection: {retries}; authgate ERROR lines: {len(errors)}; "
          f"log folder {run}")
    for l in errors[:10]:
        print("  " + l)
    if failed or socket or errors:
        sys.exit(1)
    shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
