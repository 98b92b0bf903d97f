#!/usr/bin/env bash
# Load benchmarks: groupchatd side by side with `ncat --chat` and refrelay (the reference relay in
# benches/refrelay: the floor), all driven by the same chatbench (benches/chatbench).
#
# Builds the release binaries, then runs the scenarios (see usage) REPS times, interleaved
# (groupchatd, ncat, refrelay, groupchatd, ...), each run against a freshly started server on
# 127.0.0.1, and measures start-up to READY=1 and a 10,000-client join storm (S5). Prints a
# markdown report of medians, ratios and the targets of issue 10, and writes it with every raw
# result to target/bench-results/<UTC time>/ (report.md; latest.md points at the newest report).
# Every wait and every run is bounded; the whole script stops starting new runs once its budget
# (BENCH_BUDGET_SECS, default 900) is spent. Only processes this script started are stopped, by PID.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/run.sh [--quick]

  --quick   one repetition instead of three (a smoke run)

Scenarios (all on 127.0.0.1, 64-byte lines, every line its own write() unless noted, as netcat
sends what a person types or a script echoes):
  S1 chatty room  100 clients, 10 senders x 10,000 lines, as fast as possible
  S1e             S1 for refrelay with 72-byte lines: as many bytes per delivery as groupchatd
                  writes in S1 (its `<nick> ` prefix and CRLF), the floor for what groupchatd
                  must send (refrelay only)
  S1f             S1 with groupchatd's flood limiter engaged (flood_burst at its default of 10;
                  groupchatd only: the others have no limiter)
  S2 big room     1000 clients, 1 sender x 2000 lines, as fast as possible
  S3 steady       200 clients, 20 senders x 50 lines/s for 10 s, staggered over the 20 ms period
  S4 idle         10,000 clients holding, each with a nickname; RSS per connection (groupchatd
                  only: ncat's select() stops at ~1020 clients, and neither ncat nor refrelay
                  sends a greeting by which chatbench could see a connection established)
  S5 join storm   from groupchatd's S4 runs: set-up time and server CPU while 10,000 join
  start-up        spawn -> READY=1 on NOTIFY_SOCKET, median of 10
  S1b, S2b        S1 and S2 with up to 64 lines per write() (chatbench --batch 64), reported in
                  a second table: they measure a server's batching more than its per-line cost

groupchatd runs with flood_rate = 1e6 lines/s and flood_burst = 100000 (limits lifted but the
limiter in place), except in S1f (flood_burst left at 10), and max_clients_per_ip = 0. chatbench
sends a nickname (--hello) to groupchatd only: ncat and refrelay have no nicknames.

Environment: BENCH_BUDGET_SECS (default 900), BENCH_OUT (default target/bench-results).
ncat comes from the Debian package `ncat`; when it is missing and we are root, it is installed.
It runs as `ncat -l --chat --max-conns 20000 127.0.0.1 PORT`, and its listen backlog (10) is
raised to 4096 once it listens, or most of chatbench's burst of connects hang (harness.py
backlog). ncat uses select(), so it cannot hold more than ~1020 clients: its S4 runs fail.
EOF
}

REPS=3
for arg in "$@"; do
  case "$arg" in
    --quick) REPS=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
BUDGET=${BENCH_BUDGET_SECS:-900}
OUT_BASE=$(realpath -m "${BENCH_OUT:-target/bench-results}")
RUN_DIR="$OUT_BASE/$(date -u +%Y%m%dT%H%M%SZ)"
# Unix sockets (admin, NOTIFY_SOCKET) need an absolute path under 108 bytes: keep them short.
SOCK_DIR=$(mktemp -d /tmp/groupchatd-bench.XXXXXX)
RESULTS="$RUN_DIR/results.jsonl"
BIN=target/release
HARNESS=(python3 benches/harness.py)
log() { printf '[run.sh %3ds] %s\n' "$SECONDS" "$*" >&2; }
# The processes it starts, stopped only by PID (LIVE, stop_pid, over_budget).
source benches/procs.sh

# ---- tools ---------------------------------------------------------------------------------

if ! command -v ncat >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ncat (Debian package ncat)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get -o DPkg::Lock::Timeout=60 update -qq || true
    timeout 300 apt-get -o DPkg::Lock::Timeout=60 install -y -qq --no-install-recommends ncat \
      || log "could not install ncat; running groupchatd alone"
  else
    log "ncat is not installed (Debian package ncat); running groupchatd alone"
  fi
fi
SERVERS=(groupchatd)
command -v ncat >/dev/null && SERVERS+=(ncat)
SERVERS+=(refrelay)

mkdir -p "$RUN_DIR"
log "building release binaries"
# groupchatd's package holds groupchatd and chatctl; chatbench and refrelay are workspace members.
timeout 900 cargo build --release --locked -p groupchatd -p chatbench -p refrelay >&2

# Servers and chatbench both get every descriptor the hard limit allows (S4 needs 10,000+).
ulimit -n "$(ulimit -Hn)"
log "open file limit $(ulimit -n); results in $RUN_DIR"

CONFIG="$RUN_DIR/groupchatd.toml"
cat >"$CONFIG" <<'EOF'
# Benchmarks: flood limits lifted so senders go as fast as they can, but the limiter still runs
# (its cost is part of the figure), and no per-address cap (every client comes from 127.0.0.1).
# Everything else is the default, including max_clients = 10000, except HTTP, which is off so
# that a run never competes with anything else for its port.
http_listen = []
flood_rate = 1e6
flood_burst = 100000
max_clients_per_ip = 0
EOF
# S1f: the limiter engaged: the rate lifted, the burst at its default of 10.
CONFIG_FLOOD="$RUN_DIR/groupchatd-flood.toml"
cat >"$CONFIG_FLOOD" <<'EOF'
http_listen = []
flood_rate = 1e6
max_clients_per_ip = 0
EOF

# ---- servers -------------------------------------------------------------------------------


server_cpu() { "${HARNESS[@]}" cpu "$1" 2>/dev/null || echo null; }

# `chatctl --json stats` result object, or null.
stats() {
  local reply
  reply=$("$BIN/chatctl" --socket "$SRV_ADMIN" --timeout 5 --json stats 2>/dev/null) ||
    { echo null; return; }
  python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["result"]))' \
    "$reply" 2>/dev/null || echo null
}

# $2 - $1 for two readings of server_cpu (null if either is).
sub() {
  python3 -c 'import sys; a, b = sys.argv[1:]
print("null" if "null" in (a, b) else f"{float(b) - float(a):.6f}")' "$1" "$2"
}

# ---- one run -------------------------------------------------------------------------------

no_server() {
  "${HARNESS[@]}" record --out "$RESULTS" --scenario "$1" --server "$2" --rep "$3" --rc 1 \
    "error=the server did not start"
}

# run_fanout SCENARIO SERVER REP TIMEOUT CHATBENCH-ARGS...
run_fanout() {
  local scen=$1 server=$2 rep=$3 limit=$4 config=$CONFIG
  shift 4
  local tag="$scen-$server-$rep" rc=0 cpu0 cpu1 alive=true hello=() scen_lc
  # Only groupchatd has nicknames; for the others the hello line would be a chat line. A
  # scenario's variants (S1, S1f, S1b) use the same names, so they write the same bytes per
  # delivery (S1f's own "s1fu" names once cost it 1.4 % more bytes than S1).
  scen_lc=${scen,,}
  [[ $server == groupchatd ]] && hello=(--hello "${scen_lc:0:2}u{i}")
  [[ $scen == S1f ]] && config=$CONFIG_FLOOD
  start_server "$server" "$tag" "$config" || { no_server "$scen" "$server" "$rep"; return; }
  cpu0=$(server_cpu "$SRV_PID")
  timeout -k 5 $((limit + 30)) "$BIN/chatbench" fanout --addr "$SRV_ADDR" "$@" "${hello[@]}" \
    --pid "$SRV_PID" --timeout "$limit" --json >"$RUN_DIR/$tag.json" 2>"$RUN_DIR/$tag.err" || rc=$?
  cpu1=$(server_cpu "$SRV_PID")
  kill -0 "$SRV_PID" 2>/dev/null || alive=false
  stop_pid "$SRV_PID"
  "${HARNESS[@]}" record --out "$RESULTS" --scenario "$scen" --server "$server" --rep "$rep" \
    --rc "$rc" --report "$RUN_DIR/$tag.json" --stderr "$RUN_DIR/$tag.err" \
    --server-log "$RUN_DIR/$tag.server.log" "cpu_whole_s=$(sub "$cpu0" "$cpu1")" \
    "server_alive=$alive"
  log "$tag: exit $rc"
}

# run_idle SERVER REP: S4, and for groupchatd also S5 (the storm's CPU and the drop counters).
run_idle() {
  local server=$1 rep=$2 scen=S4 clients=10000 limit=60 hold=2
  local tag="$scen-$server-$rep" rc=0 cpu0 cpu1 cpu_storm=null members=null bench i alive=true
  local stats0=null stats1=null hello=()
  [[ $server == groupchatd ]] && hello=(--hello 'u{i}')
  start_server "$server" "$tag" || { no_server "$scen" "$server" "$rep"; return; }
  [[ $server == groupchatd ]] && stats0=$(stats)
  cpu0=$(server_cpu "$SRV_PID")
  timeout -k 5 $((limit + hold + 30)) "$BIN/chatbench" idle --addr "$SRV_ADDR" \
    --clients "$clients" --hold "$hold" "${hello[@]}" --pid "$SRV_PID" --timeout "$limit" \
    --json >"$RUN_DIR/$tag.json" 2>"$RUN_DIR/$tag.err" &
  bench=$!
  LIVE[$bench]=1
  if [[ $server == groupchatd ]]; then
    # The storm is over when every client has joined; the server is idle from then until the
    # hold ends, so sampling its CPU a little late costs no accuracy.
    for ((i = 0; i < (limit + 5) * 10; i++)); do
      members=$("$BIN/chatctl" --socket "$SRV_ADMIN" --timeout 5 --json stats 2>/dev/null \
        | grep -o '"members":[0-9]*' | cut -d: -f2) || members=null
      if [[ "$members" == "$clients" ]]; then
        cpu_storm=$(sub "$cpu0" "$(server_cpu "$SRV_PID")")
        break
      fi
      kill -0 "$bench" 2>/dev/null || break
      sleep 0.1
    done
  fi
  wait "$bench" || rc=$?
  unset "LIVE[$bench]"
  cpu1=$(server_cpu "$SRV_PID")
  [[ $server == groupchatd ]] && stats1=$(stats)
  kill -0 "$SRV_PID" 2>/dev/null || alive=false
  stop_pid "$SRV_PID"
  "${HARNESS[@]}" record --out "$RESULTS" --scenario "$scen" --server "$server" --rep "$rep" \
    --rc "$rc" --report "$RUN_DIR/$tag.json" --stderr "$RUN_DIR/$tag.err" \
    --server-log "$RUN_DIR/$tag.server.log" "cpu_whole_s=$(sub "$cpu0" "$cpu1")" \
    "storm_cpu_s=$cpu_storm" "storm_members=${members:-null}" "stats_before=$stats0" \
    "stats_after=$stats1" "server_alive=$alive"
  log "$tag: exit $rc"
}

# ---- the runs ------------------------------------------------------------------------------

# Rough upper bounds of one run in seconds, to stop starting runs the budget cannot finish.
declare -A COST=([S1]=20 [S1e]=20 [S1f]=20 [S2]=30 [S3]=30 [S4]=30 [S1b]=15 [S2b]=30)
# Per-line scenarios first, then the batched ones, so a short budget cuts the second table.
for ((rep = 1; rep <= REPS; rep++)); do
  for scen in S1 S1e S1f S2 S3 S4 S1b S2b; do
    for server in "${SERVERS[@]}"; do
      # The limiter and the named idle clients exist in groupchatd only (see usage).
      [[ $scen == S1f || $scen == S4 ]] && [[ $server != groupchatd ]] && continue
      [[ $scen == S1e && $server != refrelay ]] && continue
      if over_budget "${COST[$scen]}"; then
        log "budget of $BUDGET s spent: skipping $scen $server rep $rep"
        "${HARNESS[@]}" record --out "$RESULTS" --scenario "$scen" --server "$server" \
          --rep "$rep" --rc 3 "error=skipped: the budget of $BUDGET s was spent"
        continue
      fi
      case "$scen" in
        S1 | S1f) run_fanout "$scen" "$server" "$rep" 60 --clients 100 --senders 10 \
          --messages 10000 --size 64 ;;
        S1e) run_fanout S1e "$server" "$rep" 60 --clients 100 --senders 10 --messages 10000 \
          --size 72 ;;
        S2) run_fanout S2 "$server" "$rep" 60 --clients 1000 --senders 1 --messages 2000 --size 64 ;;
        S3) run_fanout S3 "$server" "$rep" 60 --clients 200 --senders 20 --messages 500 --rate 50 \
          --size 64 ;;
        S4) run_idle "$server" "$rep" ;;
        S1b) run_fanout S1b "$server" "$rep" 60 --clients 100 --senders 10 --messages 10000 \
          --size 64 --batch 64 ;;
        S2b) run_fanout S2b "$server" "$rep" 60 --clients 1000 --senders 1 --messages 2000 \
          --size 64 --batch 64 ;;
      esac
    done
  done
done

READY="$RUN_DIR/ready.json"
if over_budget 30; then
  log "budget spent: skipping the start-up measurement"
else
  log "start-up to READY=1, 10 times"
  timeout -k 5 120 "${HARNESS[@]}" ready --bin "$BIN/groupchatd" --config "$CONFIG" \
    --dir "$RUN_DIR" --sock-dir "$SOCK_DIR" --runs 10 >"$READY" ||
    log "start-up measurement had errors: $(cat "$READY")"
fi

# ---- the report ----------------------------------------------------------------------------

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || cpu_model="?"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock 2>/dev/null || commit="$commit (modified)"
ncat_version=$(ncat --version 2>&1 | grep -o 'Version [^ ]*' || echo "not installed")
"${HARNESS[@]}" table "$RESULTS" --ready "$READY" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --nproc "$(nproc)" --cpu "$cpu_model" --kernel "$(uname -r)" --commit "$commit" \
  --rustc "$(rustc --version)" --ncat "$ncat_version" --reps "$REPS" >"$RUN_DIR/report.md"
cp "$RUN_DIR/report.md" "$OUT_BASE/latest.md"
cat "$RUN_DIR/report.md"
log "done in $SECONDS s; report: $RUN_DIR/report.md (also $OUT_BASE/latest.md)"
