#!/usr/bin/env bash
# Local JWT validation under load (issue 23, item 9), one worker thread, wrk on loopback:
#   hit        one valid JWT on every request: answered from the answer cache
#   jwt_new    a valid JWT validated on every request (TOKENS distinct tokens in turn; the
#              proxy runs with cache.ttl 0s, so no request is a cache hit: each one costs the
#              whole local validation, signature included)
#   miss       a session cookie never seen before on every request: a resolver call each
#              (the stand-in with --any-session-prefix, as make bench-load's miss)
#   jwt_new_50ms / miss_50ms   the same behind a stand-in answering after 50 ms, one
#              connection (the latency of a first request, not of a queue)
# Each measurement DURATION after WARMUP, ROUNDS rounds alternating the scenarios; prints the
# medians (requests/s, p50 latency) and the ratios. Settings: ROUNDS (3), DURATION (5s),
# WARMUP (1s), CONNECTIONS (32), TOKENS (2000), BASE_PORT (18600), AUTHGATE
# (target/release/authgate).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${AUTHGATE:-target/release/authgate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-32}
TOKENS=${TOKENS:-2000}
BASE_PORT=${BASE_PORT:-18600}
[ -x "$BIN" ] || { echo "bench-jwt: build $BIN first (make build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench-jwt: needs wrk" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

echo_port=$BASE_PORT; fast=$((BASE_PORT + 1)); slow=$((BASE_PORT + 2))
origin=http://127.0.0.1:$fast
"$BIN" echo --listen 127.0.0.1:$echo_port >/dev/null 2>&1 & pids+=($!)
for port in $fast $slow; do
  latency=0s; [ "$port" = "$slow" ] && latency=50ms
  "$BIN" standin --listen 127.0.0.1:$port --users conf/users.yaml --latency $latency \
    --any-session-prefix bench- --token-origin "$origin" >/dev/null 2>&1 & pids+=($!)
done

# proxy NAME PORT RESOLVER_PORT TTL: one worker, jwt on (keys from the fast stand-in).
proxy() {
  cat >"$dir/$1.yaml" <<YAML
pingora:
  threads: 1
  work_stealing: false
  pid_file: $dir/$1.pid
  upgrade_sock: $dir/$1.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listen:
  - addr: 127.0.0.1:$2
resolver:
  url: http://127.0.0.1:$3/_resolver/resolve
cache:
  ttl: $4
access_log:
  enabled: false
jwt:
  jwks_url: $origin/oauth2/jwks
  issuer: $origin
  audience: $origin
upstreams:
  app:
    backends: [127.0.0.1:$echo_port]
routes:
  - path: /
    upstream: app
    auth: identify
YAML
  RUST_LOG=warn "$BIN" -c "$dir/$1.yaml" >"$dir/$1.log" 2>&1 & pids+=($!)
}
cached=$((BASE_PORT + 3)); validating=$((BASE_PORT + 4)); validating_slow=$((BASE_PORT + 5)); slow_miss=$((BASE_PORT + 6))
proxy cached $cached $fast 10m
proxy validating $validating $fast 0s
proxy validating_slow $validating_slow $slow 0s
proxy slow_miss $slow_miss $slow 10m
sleep 2

# Tokens minted after the proxies started (a token issued before a process started goes to
# the resolver), signed with the stand-in's demo key.
sleep 1
python3 - "$TOKENS" "$origin" >"$dir/tokens.txt" <<'PY'
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open("src/devserver/standin-key.pem", "rb").read(), None)
kid = [l.split('"')[1] for l in open("src/devserver/tokens.rs") if l.startswith("pub const DEMO_KID")][0]
n, origin = int(sys.argv[1]), sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": kid}).encode())
for i in range(n):
    claims = {"iss": origin, "aud": [origin], "sub": "2b6e2d4a-alice", "iat": now, "exp": now + 1800,
              "jti": f"bench-{i}", "client_id": "bench", "amr": ["pwd"], "auth_time": now - 60,
              "https://authgear.com/claims/user/is_anonymous": False,
              "https://authgear.com/claims/user/is_verified": True,
              "https://authgear.com/claims/user/can_reauthenticate": True,
              "https://authgear.com/claims/user/roles": ["admin"]}
    signing = head + "." + b64(json.dumps(claims).encode())
    sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    print(signing + "." + b64(sig))
PY
head -1 "$dir/tokens.txt" >"$dir/one.txt"
# Every proxy answers a token locally before measuring (its keys are in).
for port in $cached $validating $validating_slow; do
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$dir/one.txt")" 127.0.0.1:$port/) || true
    [ "$code" = 200 ] && break; sleep 0.1
  done
done

# run NAME PORT SCRIPT [TOKENS] [CONNECTIONS]: prints "rps p50_ms"
run() {
  local script=$3 tok=${4:-} c=${5:-$CONNECTIONS}
  TOKENS=$tok wrk -t1 -c"$c" -d"$WARMUP" -s "$script" "http://127.0.0.1:$2/" -- "w$RANDOM$RANDOM" >/dev/null
  TOKENS=$tok wrk -t1 -c"$c" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$2/" -- "m$RANDOM$RANDOM" >"$dir/out"
  local rps p50
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/out")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$dir/out")
  echo "$1 $rps $p50"
}
: >"$dir/results"
for r in $(seq "$ROUNDS"); do
  run hit $cached benches/load/jwt.lua "$dir/one.txt" >>"$dir/results"
  run jwt_new $validating benches/load/jwt.lua "$dir/tokens.txt" >>"$dir/results"
  run miss $cached benches/load/miss.lua >>"$dir/results"
  # Latency of a request for a token not seen before, one client at a time.
  run jwt_new_50ms $validating_slow benches/load/jwt.lua "$dir/tokens.txt" 1 >>"$dir/results"
  run miss_50ms $slow_miss benches/load/miss.lua "" 1 >>"$dir/results"
done
grep -h "ERROR\|panick" "$dir"/*.log || true
python3 - "$dir/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50 = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50)))
med = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in rows.items()}
print("| scenario | requests/s (median) | p50 latency ms (median) | rounds |")
print("|---|---|---|---|")
for k, (rps, p50) in med.items():
    print(f"| {k} | {rps:.0f} | {p50:.3f} | {len(rows[k])} |")
j, h, m = med["jwt_new"][0], med["hit"][0], med["miss"][0]
print(f"\njwt_new / hit = {j/h:.2f} (target >= 0.5); jwt_new / miss = {j/m:.2f} (target >= 2); "
      f"jwt_new_50ms p50 = {med['jwt_new_50ms'][1]:.3f} ms (target < 1 ms); miss_50ms p50 = {med['miss_50ms'][1]:.3f} ms")
PY
