#!/usr/bin/env bash
# Load benchmark: authgate side by side with nginx (issue 6).
#
# Starts on loopback only: the echo backend and a resolver stand-in (authgate's own dev
# servers), nginx configured exactly as Authgear's seed recipe, the same nginx tuned
# (keep-alive pools, cache lock), a plain nginx proxy without authentication, and authgate
# with the equivalent configuration (benches/load/). Then, for each worker count (nginx
# worker processes = authgate threads), it measures with wrk, alternating the proxies
# (A B C A B C ...) for ROUNDS rounds:
#   ceiling   direct to the echo backend, and nginx as a plain proxy (no auth): for scale
#   hit       one valid session, keep-alive clients
#   miss      a session never seen before on every request (benches/load/miss.lua)
#   overhead  authgate's identify route (cache hit) against its public route, same backend
#   herd      HERD concurrent first requests for one new session, resolver HERD_LATENCY away:
#             how many calls the resolver received (a fresh stand-in and proxy per count)
# and writes the medians, the per-round ratios and the targets to target/bench-load/results.md
# (and to BENCHMARKS.md, between its load-bench markers, for a full run).
#
# Settings (environment): ROUNDS (3), DURATION (5s per measurement), WARMUP (1s before each
# measurement), CONNECTIONS (32), WRK_THREADS (1), WORKERS ("1 2"), HERD (100),
# HERD_LATENCY (50ms), PIN (1: pin the proxy to its own cores when there are enough),
# BASE_PORT (18400; uses BASE_PORT..BASE_PORT+20), MAX_SECONDS (600: refuse a longer plan,
# stop if exceeded), WRITE (auto: update BENCHMARKS.md when ROUNDS>=3 and DURATION>=5s;
# 1 always; 0 never), SCENARIOS ("ceiling hit miss overhead herd"), KEEP (1: keep the run's
# directory, configs and logs), TMPFS (1: that directory on /dev/shm; 0: under $TMPDIR or
# /tmp), AUTHGATE (target/release/authgate).
# Quick smoke run: ROUNDS=1 DURATION=2s WORKERS=1 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$(date +%s)

BIN=${AUTHGATE:-target/release/authgate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WORKERS_LIST=${WORKERS:-1 2}
HERD=${HERD:-100}
HERD_LATENCY=${HERD_LATENCY:-50ms}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-18400}
MAX_SECONDS=${MAX_SECONDS:-600}
WRITE=${WRITE:-auto}
SCENARIOS=${SCENARIOS:-ceiling hit miss overhead herd}
KEEP=${KEEP:-0}
TMPFS=${TMPFS:-1}
OUT=${OUT:-target/bench-load}
LOAD=benches/load
SESSION=demo-session-alice          # a valid session of conf/users.yaml
SESSION_USER=2b6e2d4a-alice         # its user id, checked in the backend's echo

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------------------------------
# Parameters and tools.

secs() { # "5s" or "5" -> 5, "1m" -> 60; wrk takes the same forms
  case "$1" in
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
for v in ROUNDS CONNECTIONS WRK_THREADS HERD BASE_PORT MAX_SECONDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
[[ $(secs "$DURATION") =~ ^[0-9]+$ && $(secs "$WARMUP") =~ ^[0-9]+$ ]] ||
  die "DURATION and WARMUP are whole seconds, e.g. 5s (got '$DURATION', '$WARMUP')"
dur_s=$(secs "$DURATION"); warm_s=$(secs "$WARMUP")
(( ROUNDS >= 1 && dur_s >= 1 )) || die "ROUNDS and DURATION must be at least 1"

# nginx and wrk: installed when missing (as root, with apt-get), else a one-line instruction.
NGINX=$(command -v nginx || true); [[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]] || ! command -v wrk >/dev/null; then
  if [[ $(id -u) = 0 ]] && command -v apt-get >/dev/null; then
    log "installing nginx-light and wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  else
    die "needs nginx and wrk: run 'sudo apt-get install -y nginx-light wrk' (or your OS's equivalent), then retry"
  fi
fi
"$NGINX" -V 2>&1 | grep -q -- --with-http_auth_request_module ||
  die "$NGINX lacks the auth_request module: install nginx-light or nginx (Debian/Ubuntu)"
for t in curl python3; do command -v "$t" >/dev/null || die "needs $t: install it, then retry"; done
[[ -x $BIN ]] || die "no $BIN: run 'cargo build --release --bin authgate' (or 'make bench')"
"$BIN" standin --help | grep -q -- --any-session-prefix ||
  die "$BIN has no 'standin --any-session-prefix': rebuild it"
command -v taskset >/dev/null || PIN=0

# The whole run must stay under MAX_SECONDS: refuse a plan that cannot.
n_blocks=$(wc -w <<<"$WORKERS_LIST")
# per block: 10 measured (proxy, scenario) pairs per round, each WARMUP + DURATION + ~1 s of
# bookkeeping, plus ~15 s for starting and stopping processes and the herd.
estimate=$(( n_blocks * (10 * ROUNDS * (warm_s + dur_s + 1) + 15) ))
(( estimate <= MAX_SECONDS )) ||
  die "this plan takes about ${estimate}s, over MAX_SECONDS=$MAX_SECONDS: lower ROUNDS, DURATION or WORKERS"
log "plan: workers {$WORKERS_LIST}, $ROUNDS rounds of $DURATION (+$WARMUP warm-up), wrk -t$WRK_THREADS -c$CONNECTIONS; about ${estimate}s"

budget() { # stop, rather than overrun, if the machine is far slower than planned
  (( $(date +%s) - started_at <= MAX_SECONDS )) || die "over MAX_SECONDS=$MAX_SECONDS, stopping (partial results in $OUT)"
}

# Ports (all on 127.0.0.1).
P_ECHO=$BASE_PORT; P_RESOLVER=$((BASE_PORT + 1)); P_HERD_RESOLVER=$((BASE_PORT + 2))
P_SEED=$((BASE_PORT + 10)); P_TUNED=$((BASE_PORT + 11)); P_PLAIN=$((BASE_PORT + 12))
P_AUTHGATE=$((BASE_PORT + 13)); P_HERD_PROXY=$((BASE_PORT + 20))
for p in $P_ECHO $P_RESOLVER $P_HERD_RESOLVER $P_SEED $P_TUNED $P_PLAIN $P_AUTHGATE $P_HERD_PROXY; do
  [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]] || die "port $p is in use: set BASE_PORT to a free range"
done

# ---------------------------------------------------------------------------------------
# Processes: every one is started by start(), remembered by pid, and stopped by pid, also on
# failure or Ctrl-C (trap EXIT). Stops are bounded in time: signal, wait up to 5 s, SIGKILL.

# The run's directory (configs, logs, nginx's cache files) is on tmpfs when there is one, as
# /tmp is on many systems: nginx's file cache then costs no disk I/O, which would otherwise
# make its figures depend on the disk and on whatever else writes to it.
# TMPFS=0 puts it under ${TMPDIR:-/tmp} instead.
RUN_PARENT=${TMPDIR:-/tmp}
[[ $TMPFS != 0 && -d /dev/shm && -w /dev/shm ]] && RUN_PARENT=/dev/shm
RUN=$(mktemp -d "$RUN_PARENT/authgate-bench.XXXXXX")
mkdir -p "$OUT"
declare -A SIGNAL=()   # pid -> signal that stops it quickly
declare -A ERRLOG=()   # proxy pid -> its error log, shown when wrk counts errors

alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $s && $s != Z ]]; }

stop() { # stop PID: its fast-shutdown signal, at most 5 s, then SIGKILL (and its children)
  local pid=$1 sig=${SIGNAL[$1]:-TERM} kids i
  [[ -n ${SIGNAL[$pid]+x} ]] || return 0
  kids=$(pgrep -P "$pid" || true)
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "pid $pid did not stop on SIG$sig, killing it"
    kill -KILL "$pid" $kids 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "SIGNAL[$pid]"
}

cleanup() {
  local pid
  for pid in "${!SIGNAL[@]}"; do stop "$pid"; done
  if [[ $KEEP = 1 ]]; then log "kept $RUN (configs, logs)"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'log "stopped by a failing command at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# start NAME SIGNAL CPUS CMD...: runs CMD in the background (pinned to CPUS unless empty),
# output to $RUN/NAME.log; sets STARTED to its pid.
start() {
  local name=$1 sig=$2 cpus=$3; shift 3
  if [[ -n $cpus ]]; then
    taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 &
  else
    "$@" >"$RUN/$name.log" 2>&1 &
  fi
  STARTED=$!
  SIGNAL[$STARTED]=$sig
}

# wait_http NAME PID PORT: until the port answers HTTP (any status), at most 10 s.
wait_http() {
  local name=$1 pid=$2 port=$3 i
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || { tail -20 "$RUN/$name.log" >&2; die "$name exited at start (log above)"; }
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/_ready" || true) != 000 ]] && return 0
    sleep 0.1
  done
  tail -20 "$RUN/$name.log" >&2; die "$name did not answer on port $port within 10 s"
}

# ---------------------------------------------------------------------------------------
# The peers and the proxies.

USER_LINE=""   # as root, nginx's workers would switch to `nobody`, who cannot write $RUN
[[ $(id -u) = 0 ]] && USER_LINE="user $(id -un) $(id -gn);"
EXTRA_TEMP=""  # temp paths of the modules this nginx has, so it never touches /var/lib/nginx
for m in fastcgi uwsgi scgi; do
  "$NGINX" -V 2>&1 | grep -q -- "--without-http_${m}_module" || EXTRA_TEMP+="${m}_temp_path @DIR@/$m; "
done

# render TEMPLATE OUT DIR PORT RESOLVER_PORT WORKERS: fills the @...@ fields of a config
render() {
  sed -e "s|@USER_LINE@|$USER_LINE|; s|@EXTRA_TEMP_PATHS@|$EXTRA_TEMP|" \
      -e "s|@DIR@|$3|g; s|@PORT@|$4|g; s|@RESOLVER_PORT@|$5|g; s|@WORKERS@|$6|g" \
      -e "s|@BACKEND_PORT@|$P_ECHO|g" "$1" >"$2"
}

# start_nginx KIND PORT RESOLVER_PORT WORKERS: nginx with benches/load/nginx-KIND.conf,
# prefix and every file it writes in its own directory under $RUN; sets STARTED.
start_nginx() {
  local kind=$1 port=$2 rport=$3 workers=$4 dir=$RUN/nginx-$1-$2
  mkdir -p "$dir"
  render "$LOAD/nginx-common.conf" "$dir/common.conf" "$dir" "$port" "$rport" "$workers"
  render "$LOAD/nginx-http-common.conf" "$dir/http-common.conf" "$dir" "$port" "$rport" "$workers"
  render "$LOAD/nginx-$kind.conf" "$dir/nginx.conf" "$dir" "$port" "$rport" "$workers"
  "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" ||
    die "nginx rejects $dir/nginx.conf (from $LOAD/nginx-$kind.conf)"
  start "nginx-$kind-$port" TERM "$PROXY_CPUS" "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  ERRLOG[$STARTED]=$dir/error.log
  wait_http "nginx-$kind-$port" "$STARTED" "$port"
}

# start_authgate PORT RESOLVER_PORT WORKERS: authgate with benches/load/authgate.yaml; sets
# STARTED. SIGINT is its fast shutdown.
start_authgate() {
  local port=$1 rport=$2 workers=$3 dir=$RUN/authgate-$1
  mkdir -p "$dir"
  render "$LOAD/authgate.yaml" "$dir/authgate.yaml" "$dir" "$port" "$rport" "$workers"
  "$BIN" -t -c "$dir/authgate.yaml" >"$dir/check.log" 2>&1 ||
    { cat "$dir/check.log" >&2; die "authgate rejects $dir/authgate.yaml"; }
  RUST_LOG=warn start "authgate-$port" INT "$PROXY_CPUS" "$BIN" -c "$dir/authgate.yaml"
  ERRLOG[$STARTED]=$RUN/authgate-$port.log
  wait_http "authgate-$port" "$STARTED" "$port"
}

# start_standin PORT LATENCY: the resolver stand-in; `bench-*` sessions are valid users.
start_standin() {
  RUST_LOG=warn start "standin-$1" TERM "$CLIENT_CPUS" "$BIN" standin --listen "127.0.0.1:$1" \
    --users conf/users.yaml --latency "$2" --any-session-prefix bench-
  wait_http "standin-$1" "$STARTED" "$1"
}

standin_requests() { # the stand-in's request counter (this request included)
  curl -s --max-time 2 "http://127.0.0.1:$1/_standin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}

# check NAME PORT PATH COOKIE EXPECT: one request must answer 200 with EXPECT in the echoed
# request (the identity the proxy injected): never benchmark a proxy that answers errors.
check() {
  local body code
  body=$(curl -s --max-time 3 -w '\n%{http_code}' -H "Cookie: session=$4" "http://127.0.0.1:$2$3" || true)
  code=${body##*$'\n'}
  [[ $code = 200 && $body == *"$5"* ]] || {
    echo "$body" | head -c 600 >&2; echo >&2
    die "$1 (port $2) answered $code without '$5' for $3 (body above)"
  }
}

# ---------------------------------------------------------------------------------------
# Measuring.

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # user+system ticks of a process and its children (nginx's workers)
  local p t=0
  for p in $1 $(pgrep -P "$1" || true); do
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}

RESULTS=$OUT/results.tsv
HERD_RESULTS=$OUT/herd.tsv
printf 'workers\tscenario\tproxy\tround\trps\tnon2xx\tsocket_errors\tproxy_cpu_pct\trequests\tresolves\n' >"$RESULTS"
printf 'workers\tproxy\tresolver_calls\trequests\tok_identified\tstatuses\tmedian_ms\tmax_ms\n' >"$HERD_RESULTS"
nonce=0

# wrk_run DURATION OUTFILE URL [OPTIONS...]: wrk pinned to the client cores, bounded by
# timeout; SCRIPT_ARG (if set) goes to the Lua script, after the URL.
SCRIPT_ARG=""
wrk_run() {
  local d=$1 out=$2 url=$3; shift 3
  local cmd=(wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$d" --timeout 2s "$@" "$url")
  [[ -n $SCRIPT_ARG ]] && cmd+=(-- "$SCRIPT_ARG")
  [[ -n $CLIENT_CPUS ]] && cmd=(taskset -c "$CLIENT_CPUS" "${cmd[@]}")
  timeout $(( $(secs "$d") + 20 )) "${cmd[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed: ${cmd[*]}"; }
}

# measure WORKERS SCENARIO PROXY ROUND PID URL [WRK ARGS...]: warm-up, then one measurement;
# appends a line to results.tsv. The miss scenario gets a fresh nonce for each wrk run.
measure() {
  local workers=$1 scenario=$2 proxy=$3 round=$4 pid=$5 url=$6; shift 6
  local args=("$@") out=$RUN/wrk.out t0 t1 ns0 ns1 c0 c1 rps total non2xx sockerr cpu
  budget
  [[ $scenario = miss ]] && args=(-s "$LOAD/miss.lua" "$@")
  if (( warm_s > 0 )); then
    nonce=$((nonce + 1)); [[ $scenario = miss ]] && SCRIPT_ARG="$started_at-$nonce"
    wrk_run "$WARMUP" "$out" "$url" "${args[@]}"
  fi
  nonce=$((nonce + 1)); [[ $scenario = miss ]] && SCRIPT_ARG="$started_at-$nonce"
  # The proxy's CPU time over the wall time of the measurement (100%: one core saturated).
  # The stand-in's counter: resolves made during the measurement (a hit should make none).
  c0=$(standin_requests "$P_RESOLVER")
  t0=$( [[ $pid = - ]] && echo 0 || cpu_ticks "$pid"); ns0=$(date +%s%N)
  wrk_run "$DURATION" "$out" "$url" "${args[@]}"
  t1=$( [[ $pid = - ]] && echo 0 || cpu_ticks "$pid"); ns1=$(date +%s%N)
  c1=$(standin_requests "$P_RESOLVER")
  SCRIPT_ARG=""
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  total=$(awk '/ requests in / {print $1}' "$out")
  [[ -n $rps ]] || { cat "$out" >&2; die "no Requests/sec in wrk's output"; }
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out"); sockerr=${sockerr:-0}
  cpu=$( [[ $pid = - ]] && echo "" || awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v ns=$((ns1 - ns0)) 'BEGIN {printf "%.0f", 100 * t / hz / (ns / 1e9)}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workers" "$scenario" "$proxy" "$round" "$rps" \
    "$non2xx" "$sockerr" "$cpu" "${total:-0}" "$((c1 - c0 - 1))" >>"$RESULTS"
  printf 'bench: %s worker(s) %-8s %-17s round %s: %9s req/s  proxy CPU %4s%%  resolves %s' \
    "$workers" "$scenario" "$proxy" "$round" "$rps" "${cpu:--}" "$((c1 - c0 - 1))" >&2
  if [[ $non2xx != 0 || $sockerr != 0 ]]; then
    printf '  WARNING: %s non-2xx, %s socket errors\n' "$non2xx" "$sockerr" >&2
    grep -E 'Non-2xx|Socket errors' "$out" | sed 's/^/bench:   /' >&2
    # What the proxy says about them: the last distinct lines of its error log.
    if [[ -n ${ERRLOG[$pid]:-} && -s ${ERRLOG[$pid]} ]]; then
      log "  last lines of ${ERRLOG[$pid]#"$RUN/"}:"
      tail -2000 "${ERRLOG[$pid]}" | sed -E 's/^[0-9/]+ [0-9:]+ //; s/^\[[^]]*Z //; s/[0-9a-f]{32}/KEY/g; s/[0-9]+/N/g' |
        sort | uniq -c | sort -rn | head -4 | cut -c1-220 | sed 's/^ */bench:     /' >&2
    fi
  else
    echo >&2
  fi
}

# alternate WORKERS SCENARIO "NAME PID URL" ...: ROUNDS rounds, each proxy once per round in
# the given order (A B C A B C ...), so slow drifts of a shared machine hit all of them.
alternate() {
  local workers=$1 scenario=$2 r spec name pid url; shift 2
  local hdr=(-H "Cookie: session=$SESSION")
  [[ $scenario = miss ]] && hdr=()
  for ((r = 1; r <= ROUNDS; r++)); do
    for spec in "$@"; do
      read -r name pid url <<<"$spec"
      measure "$workers" "$scenario" "$name" "$r" "$pid" "$url" "${hdr[@]}"
    done
  done
}

# herd WORKERS KIND: a fresh stand-in HERD_LATENCY away and a fresh proxy, then HERD
# concurrent first requests for one new session; the stand-in's counter says how many
# resolves the proxy made for them.
herd() {
  local workers=$1 kind=$2 rpid ppid before after calls json session
  budget
  start_standin "$P_HERD_RESOLVER" "$HERD_LATENCY"; rpid=$STARTED
  case $kind in
    authgate) start_authgate "$P_HERD_PROXY" "$P_HERD_RESOLVER" "$workers" ;;
    *) start_nginx "$kind" "$P_HERD_PROXY" "$P_HERD_RESOLVER" "$workers" ;;
  esac
  ppid=$STARTED
  session="bench-herd-$started_at-$workers-$kind"
  before=$(standin_requests "$P_HERD_RESOLVER")
  json=$(timeout 60 python3 "$LOAD/herd.py" "$P_HERD_PROXY" "$session" "$HERD" /hello) || die "herd client failed"
  after=$(standin_requests "$P_HERD_RESOLVER")
  calls=$(( after - before - 1 ))   # the first stats request counts itself
  stop "$ppid"; stop "$rpid"
  python3 - "$workers" "nginx-$kind" "$calls" "$json" >>"$HERD_RESULTS" <<'PY'
import json, sys
w, proxy, calls, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
proxy = "authgate" if proxy == "nginx-authgate" else proxy
st = ",".join(f"{k}:{v}" for k, v in sorted(j["statuses"].items()))
print("\t".join(map(str, [w, proxy, calls, j["requests"], j["ok_identified"], st, j["median_ms"], j["max_ms"]])))
PY
  log "$workers worker(s) herd     $(tail -1 "$HERD_RESULTS" | cut -f2) : $calls resolver call(s) for $HERD concurrent requests ($json)"
}

# ---------------------------------------------------------------------------------------
# The run: one block per worker count.

ncpu=$(nproc)
PIN_NOTE=()
for W in $WORKERS_LIST; do
  [[ $W =~ ^[1-9][0-9]*$ ]] || die "WORKERS must list whole numbers (got '$W')"
  # Pinning: with a core to spare, the proxy under test gets cores 0..W-1 and everything
  # else (wrk, echo backend, stand-in) the rest, so the proxies compete for nothing but
  # their own cores. Otherwise nothing is pinned and all share every core.
  if [[ $PIN != 0 ]] && (( ncpu > W )); then
    PROXY_CPUS="0-$((W - 1))"; CLIENT_CPUS="$W-$((ncpu - 1))"
    PIN_NOTE+=("$W worker(s): proxy pinned to core(s) $PROXY_CPUS; wrk, echo backend and stand-in to core(s) $CLIENT_CPUS")
  else
    PROXY_CPUS=""; CLIENT_CPUS=""
    PIN_NOTE+=("$W worker(s): nothing pinned; proxy, wrk, echo backend and stand-in share all $ncpu cores")
  fi
  log "== $W worker(s): ${PIN_NOTE[-1]}"

  start "echo" TERM "$CLIENT_CPUS" env RUST_LOG=warn "$BIN" echo --listen "127.0.0.1:$P_ECHO"; echo_pid=$STARTED
  wait_http echo "$echo_pid" "$P_ECHO"
  start_standin "$P_RESOLVER" 0s; standin_pid=$STARTED
  start_nginx seed "$P_SEED" "$P_RESOLVER" "$W"; seed=$STARTED
  start_nginx tuned "$P_TUNED" "$P_RESOLVER" "$W"; tuned=$STARTED
  start_nginx plain "$P_PLAIN" "$P_RESOLVER" "$W"; plain=$STARTED
  start_authgate "$P_AUTHGATE" "$P_RESOLVER" "$W"; authgate=$STARTED

  # Every proxy must inject the identity, for the valid session and for a new bench- one.
  for p in "seed $P_SEED" "tuned $P_TUNED" "authgate $P_AUTHGATE"; do
    read -r name port <<<"$p"
    check "$name" "$port" /hello "$SESSION" "$SESSION_USER"
    check "$name" "$port" /hello "bench-check-$started_at" "bench-user-check-$started_at"
  done
  check authgate-public "$P_AUTHGATE" /public/hello "$SESSION" '"uri":"/public/hello"'
  check nginx-plain "$P_PLAIN" /hello "$SESSION" '"uri":"/hello"'
  check direct "$P_ECHO" /hello "$SESSION" '"uri":"/hello"'

  want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
  want ceiling && alternate "$W" ceiling "direct - http://127.0.0.1:$P_ECHO/hello" \
    "nginx-plain $plain http://127.0.0.1:$P_PLAIN/hello"
  want hit && alternate "$W" hit "nginx-seed $seed http://127.0.0.1:$P_SEED/hello" \
    "nginx-tuned $tuned http://127.0.0.1:$P_TUNED/hello" \
    "authgate $authgate http://127.0.0.1:$P_AUTHGATE/hello"
  want miss && alternate "$W" miss "nginx-seed $seed http://127.0.0.1:$P_SEED/hello" \
    "nginx-tuned $tuned http://127.0.0.1:$P_TUNED/hello" \
    "authgate $authgate http://127.0.0.1:$P_AUTHGATE/hello"
  want overhead && alternate "$W" overhead "authgate-identify $authgate http://127.0.0.1:$P_AUTHGATE/hello" \
    "authgate-public $authgate http://127.0.0.1:$P_AUTHGATE/public/hello"

  for pid in $authgate $plain $tuned $seed $standin_pid; do stop "$pid"; done
  if want herd; then for kind in seed tuned authgate; do herd "$W" "$kind"; done; fi
  stop "$echo_pid"
done

# ---------------------------------------------------------------------------------------
# The report: target/bench-load/results.md, and BENCHMARKS.md for a full run.

nginx_v=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
wrk_v=$( (wrk -v 2>&1 || true) | awk 'NR == 1 {print $2}')
rustc_v=$(rustc -V 2>/dev/null || echo "rustc: unknown")
pingora_v=$(awk '/^name = "pingora"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
if [[ $WRITE = auto ]]; then
  (( ROUNDS >= 3 && dur_s >= 5 )) && WRITE=1 || WRITE=0
fi
python3 "$LOAD/report.py" \
  --results "$RESULTS" --herd "$HERD_RESULTS" --out "$OUT/results.md" \
  $( [[ $WRITE = 1 ]] && echo --write BENCHMARKS.md ) \
  --meta "date=$(date -u +%Y-%m-%d)" \
  --meta "machine=$ncpu cores ($cpu_model), $mem, Linux $(uname -r)" \
  --meta "versions=nginx $nginx_v; wrk $wrk_v; $rustc_v; pingora $pingora_v" \
  --meta "params=ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS WORKERS=\"$WORKERS_LIST\" HERD=$HERD HERD_LATENCY=$HERD_LATENCY PIN=$PIN" \
  --meta "wrk=wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --timeout 2s" \
  --meta "herd=$HERD" --meta "herd_latency=$HERD_LATENCY" \
  "${PIN_NOTE[@]/#/--pin=}"
log "done in $(( $(date +%s) - started_at ))s; raw figures: $RESULTS, $HERD_RESULTS; table: $OUT/results.md$( [[ $WRITE = 1 ]] && echo ', BENCHMARKS.md updated')"
