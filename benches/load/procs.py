"""The processes of a Python-driven benchmark (fleet.py, profile.py): started pinned, logged to
the run's folder, waited for, and all stopped at the end, quickly (SIGINT, then SIGKILL)."""

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time

CPUS = os.cpu_count() or 1
# With a core to spare, the proxies under test get CPU 0 and everything else the rest.
PROXY_CPUS = "0" if CPUS >= 2 else None
OTHER_CPUS = f"1-{CPUS - 1}" if CPUS >= 2 else None


class Procs:
    def __init__(self, name):
        self.name = name
        self.started = []

    def log(self, msg):
        print(f"{self.name}: {msg}", file=sys.stderr, flush=True)

    def die(self, msg):
        self.log(msg)
        sys.exit(1)

    def start(self, name, argv, cpus, run, env=None):
        """Runs `argv` pinned to `cpus` (when given), its output in `run`/`name`.log."""
        if cpus and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus] + argv
        out = open(os.path.join(run, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             env=env or dict(os.environ, RUST_LOG="warn"))
        self.started.append(p)
        return p

    def wait_http(self, port, what, path="/_ready", limit=20):
        """Until `port` answers HTTP (any status)."""
        deadline = time.time() + limit
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", path)
                c.getresponse().read()
                return
            except OSError:
                time.sleep(0.05)
        self.die(f"{what} did not answer on port {port} within {limit} s")

    def stop_all(self):
        for p in self.started:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + 5
        for p in self.started:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
