#!/usr/bin/env bash
# Zero-downtime binary upgrade with Pingora's mechanism: send SIGQUIT to the running authgate
# (it offers its listening sockets on pingora.upgrade_sock, retrying until taken, then drains
# and exits), start the new one with -u -d (it takes the sockets, then goes to the
# background), and wait for the old process to be gone.
#
#   scripts/upgrade.sh [CONFIG]       (default /etc/authgate/authgate.yaml)
#   AUTHGATE=/path/to/new/authgate    the new binary (default: authgate on PATH)
#   PID_FILE=...                      must match pingora.pid_file (default /tmp/authgate.pid);
#                                     Pingora writes it in daemon mode (-d)
#   OLD_PID=...                       the running process, for one started in the foreground
set -euo pipefail
conf=${1:-/etc/authgate/authgate.yaml}
bin=${AUTHGATE:-authgate}
pid_file=${PID_FILE:-/tmp/authgate.pid}

if [ -n "${OLD_PID:-}" ]; then
  old=$OLD_PID
else
  [ -r "$pid_file" ] || { echo "upgrade: no pid file at $pid_file (set PID_FILE to pingora.pid_file, or OLD_PID)" >&2; exit 1; }
  old=$(cat "$pid_file")
fi
kill -0 "$old" 2>/dev/null || { echo "upgrade: process $old from $pid_file is not running" >&2; exit 1; }

# A new binary must accept the configuration before the old one is told to leave.
"$bin" -t -c "$conf"
kill -QUIT "$old"
# Returns once the sockets are taken and the new process is in the background.
"$bin" -u -d -c "$conf" </dev/null
echo "upgrade: the new process holds the sockets; waiting for $old to drain and exit"
for _ in $(seq 1 600); do
  if ! kill -0 "$old" 2>/dev/null; then
    echo "upgrade: done; the new process (pid file $pid_file: $(cat "$pid_file" 2>/dev/null || echo none)) serves"
    exit 0
  fi
  sleep 0.5
done
echo "upgrade: process $old is still running after 300 s (pingora.grace_period_seconds?)" >&2
exit 1
