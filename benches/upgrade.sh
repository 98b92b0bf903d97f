#!/usr/bin/env bash
# How long an upgrade pauses the relay (issue 12's targets), with the release binaries:
#
#   U1  10,000 idle clients, each with a nickname: three `chatctl upgrade`s in a row; the pause is
#       the new process's `pause_ms` (from the old process freezing to the new one serving).
#   U2  200 clients, 20 of them sending 5 lines/s each (100 lines/s, each line its own write(),
#       staggered) for 12 s, with an upgrade every 2 s: chatbench's latency percentiles and maximum
#       over every delivery, so the maximum is the longest any line waited because of an upgrade.
#
# usage: benches/upgrade.sh         (prints a markdown summary; raw output under target/bench-results)
# Every wait is bounded; only processes this script started are stopped, by PID (the daemon's line
# of processes is followed through the PID each upgrade reports).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -q -p groupchatd -p chatbench
BIN=target/release
OUT=target/bench-results/upgrade-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gcd-upgrade-bench.XXXXXX)
DAEMON_PID=""
SERVING=""
BENCH_PID=""
cleanup() {
  [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
  [ -n "$SERVING" ] && kill "$SERVING" 2>/dev/null || true
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

ctl() { "$BIN/chatctl" --socket "$WORK/admin.sock" "$@"; }
stat() { ctl --json stats | python3 -c "import json,sys; print(json.load(sys.stdin)['result']['$1'])"; }

# Waits (at most $2 seconds) until `chatctl stats` reports at least $1 members.
wait_members() {
  local want=$1 limit=$2 start=$SECONDS
  until [ "$(stat members 2>/dev/null || echo 0)" -ge "$want" ]; do
    [ $((SECONDS - start)) -lt "$limit" ] || { echo "only $(stat members) of $want joined" >&2; exit 1; }
    sleep 0.2
  done
}

start_daemon() {
  PORT=$(python3 benches/harness.py port)
  cat >"$WORK/c.toml" <<EOF
listen = ["127.0.0.1:$PORT"]
http_listen = []
admin_socket = "$WORK/admin.sock"
max_clients_per_ip = 0
connect_rate = 0
flood_rate = 1000000.0
flood_burst = 100000
EOF
  "$BIN/groupchatd" --config "$WORK/c.toml" 2>"$OUT/$1.log" &
  DAEMON_PID=$!
  local start=$SECONDS
  until ctl stats >/dev/null 2>&1; do
    [ $((SECONDS - start)) -lt 10 ] || { echo "daemon not ready" >&2; exit 1; }
    sleep 0.05
  done
  SERVING=$(stat pid)
}

stop_daemon() {
  kill "$SERVING" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  local start=$SECONDS
  while kill -0 "$SERVING" 2>/dev/null; do
    [ $((SECONDS - start)) -lt 10 ] || { kill -9 "$SERVING"; break; }
    sleep 0.05
  done
  SERVING="" DAEMON_PID=""
}

upgrade() {
  local out
  out=$(ctl upgrade) || { echo "upgrade failed: $out" >&2; exit 1; }
  SERVING=$(sed -n 's/^upgraded: pid \([0-9]*\).*/\1/p' <<<"$out")
}

pauses() { grep -o 'pause_ms=[0-9.]*' "$OUT/$1.log" | cut -d= -f2 | paste -sd' '; }

# U1
start_daemon U1
"$BIN/chatbench" idle --addr "127.0.0.1:$PORT" --clients 10000 --hello 'idle{i}' --hold 120 \
  --timeout 60 >"$OUT/U1-chatbench.txt" 2>&1 &
BENCH_PID=$!
wait_members 10000 90
for _ in 1 2 3; do upgrade; done
U1=$(pauses U1)
kill "$BENCH_PID" 2>/dev/null || true
wait "$BENCH_PID" 2>/dev/null || true
BENCH_PID=""
stop_daemon

# U2
start_daemon U2
"$BIN/chatbench" fanout --addr "127.0.0.1:$PORT" --clients 200 --senders 20 --messages 60 \
  --rate 5 --hello 'f{i}' --timeout 60 --json >"$OUT/U2-chatbench.json" 2>"$OUT/U2-chatbench.err" &
BENCH_PID=$!
wait_members 200 30
for _ in 1 2 3 4 5; do
  sleep 2
  upgrade
done
wait "$BENCH_PID"
BENCH_PID=""
U2=$(pauses U2)
LAT=$(python3 - "$OUT/U2-chatbench.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
def find(d, key):
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            got = find(v, key)
            if got is not None:
                return got
    return None
lat = find(r, "latency_us") or {}
lost = find(r, "lost")
print(f"p50 {lat.get('p50', 0)/1000:.2f} ms, p99 {lat.get('p99', 0)/1000:.2f} ms, "
      f"max {lat.get('max', 0)/1000:.1f} ms, lost {lost}")
EOF
)
stop_daemon

{
  echo "| scenario | pause per upgrade (ms) | line latency |"
  echo "| --- | --- | --- |"
  echo "| U1 10,000 idle clients, 3 upgrades | $U1 | - |"
  echo "| U2 200 clients at 100 lines/s, 5 upgrades | $U2 | $LAT |"
} | tee "$OUT/report.md"
