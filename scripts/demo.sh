#!/usr/bin/env bash
# Starts the resolver stand-in and the echo backend in the background, then authgate with
# the shipped configuration in the foreground. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${AUTHGATE:-target/debug/authgate}
conf=${CONF:-conf/authgate.yaml}

"$bin" -t -c "$conf"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

# The browser uses `localhost` throughout: cookies are shared across its ports, so the
# stand-in's session cookie (:3001) reaches authgate (:8080).
"$bin" standin --listen 127.0.0.1:3001 --users conf/users.yaml \
  --app-origin http://localhost:8080 & pids+=($!)
"$bin" echo --listen 127.0.0.1:3000 \
  --logout-url 'http://localhost:3001/logout?return_to=http%3A%2F%2Flocalhost%3A8080%2Faccount' & pids+=($!)

cat <<'TRY'

authgate is starting on http://127.0.0.1:8080 (resolver stand-in :3001, echo backend :3000).
Open http://localhost:8080/account in a browser: sign in as a demo user, see the identity
headers the backend received, sign out. Or, in another terminal:

  curl -s -H 'Cookie: session=demo-session-alice' localhost:8080/hello      # valid session: identity headers
  curl -s -H 'Authorization: Bearer demo-token-bob' localhost:8080/api       # bearer token
  TOKEN=$(curl -s 'localhost:3001/_standin/token?user=alice')              # a JWT access token for alice
  curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/hello           # validated here: "cache":"jwt" in the log
  curl -s -H 'Cookie: session=expired' localhost:8080/                       # x-authgear-session-valid: false
  curl -s -H 'X-Authgear-User-Id: forged' localhost:8080/                    # forged header: stripped

Sessions and tokens are in conf/users.yaml. Each request's access log line (JSON) appears
below. Ctrl-C stops everything.

TRY
RUST_LOG=${RUST_LOG:-info} "$bin" -c "$conf"
