#!/usr/bin/env python3
"""The herd scenario's client: N concurrent first requests for one session.

Opens N connections to the proxy, waits until all are open, then sends the N requests at
the same instant (a barrier) and reads every answer. Prints one JSON line: how many answers
were 200 with the session's identity injected, the status counts, and the latencies.
Every socket has a timeout, so the script ends in bounded time whatever the proxy does.

Usage: herd.py PORT SESSION [N] [PATH]
"""

import json
import socket
import statistics
import sys
import threading
import time

port = int(sys.argv[1])
session = sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
path = sys.argv[4] if len(sys.argv) > 4 else "/hello"
TIMEOUT = 10.0

request = (
    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    f"Cookie: session={session}\r\nConnection: close\r\n\r\n"
).encode()
# The stand-in's made-up user for bench-<rest> is bench-user-<rest>; the echo backend
# reports the headers it received, so the id in the body proves the identity was injected.
expected_id = "bench-user-" + session.removeprefix("bench-")

barrier = threading.Barrier(n, timeout=TIMEOUT)
results = [None] * n


def one(i):
    status, ms, identified = "error", None, False
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.settimeout(TIMEOUT)
        barrier.wait()
        t0 = time.monotonic()
        s.sendall(request)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        ms = (time.monotonic() - t0) * 1000
        data = b"".join(chunks)
        s.close()
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "garbled"
        identified = expected_id.encode() in data
    except Exception as e:  # a refused connection, a timeout, a broken barrier: report it
        status = "error:" + type(e).__name__
    results[i] = (status, ms, identified)


threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join(TIMEOUT * 3)

statuses = {}
for r in results:
    key = r[0] if r else "no-answer"
    statuses[key] = statuses.get(key, 0) + 1
lat = sorted(r[1] for r in results if r and r[1] is not None)
print(
    json.dumps(
        {
            "requests": n,
            "ok_identified": sum(1 for r in results if r and r[0] == "200" and r[2]),
            "statuses": statuses,
            "median_ms": round(statistics.median(lat), 1) if lat else None,
            "max_ms": round(lat[-1], 1) if lat else None,
        }
    )
)
