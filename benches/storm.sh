#!/usr/bin/env bash
# The join storm (S5 of run.sh) alone, for comparing builds of groupchatd side by side: each
# BUILD is a directory holding groupchatd and chatctl (from the same commit), optionally followed
# by :CONFIG, a config file for it (default: run.sh's, which an older build may not accept). The
# builds take turns, REPS rounds, a fresh server each run; chatbench is this tree's.
#
# Prints one line per run: the set-up time (until all clients had their welcome and saw the
# readiness probe), the server's CPU until the last one joined, and how many connects the
# kernel dropped because the listen queue was full (TcpExtListenOverflows over the run; each
# costs its client a 1 s SYN retransmission, so these runs take a second longer).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/storm.sh [--reps N] [--clients N] BUILD[:CONFIG]...

  e.g. benches/storm.sh --reps 5 target/release /tmp/old/target/release:/tmp/old.toml
EOF
}

REPS=3 CLIENTS=10000 BUILDS=()
while (($#)); do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) BUILDS+=("$1"); shift ;;
  esac
done
((${#BUILDS[@]})) || { usage >&2; exit 2; }

cd "$(dirname "$0")/.."
CHATBENCH=$(realpath target/release/chatbench)
[[ -x $CHATBENCH ]] || cargo build --release --locked -p chatbench >&2
SOCK_DIR=$(mktemp -d /tmp/groupchatd-storm.XXXXXX)
RUN_DIR=$SOCK_DIR BUDGET=3600 HARNESS=(python3 benches/harness.py)
log() { printf '[storm.sh %3ds] %s\n' "$SECONDS" "$*" >&2; }
source benches/procs.sh
ulimit -n "$(ulimit -Hn)"
CONFIG="$SOCK_DIR/groupchatd.toml"
printf 'http_listen = []\nflood_rate = 1e6\nflood_burst = 100000\nmax_clients_per_ip = 0\n' \
  >"$CONFIG"

overflows() { nstat -az TcpExtListenOverflows 2>/dev/null | awk 'NR > 1 && $1 ~ /Overflows/ {print $2}'; }
cpu() { "${HARNESS[@]}" cpu "$1"; }

for ((rep = 1; rep <= REPS; rep++)); do
  for build in "${BUILDS[@]}"; do
    BIN=${build%%:*} config=$CONFIG
    [[ $build == *:* ]] && config=${build#*:}
    tag="storm-$rep-$(echo "$BIN" | tr -c 'a-zA-Z0-9\n' _ | tail -c 40)"
    start_server groupchatd "$tag" "$config" || { log "$BIN did not start"; continue; }
    drops0=$(overflows) cpu0=$(cpu "$SRV_PID") storm=null
    "$CHATBENCH" idle --addr "$SRV_ADDR" --clients "$CLIENTS" --hold 1 --hello 'u{i}' \
      --pid "$SRV_PID" --timeout 60 --json >"$SOCK_DIR/$tag.json" &
    bench=$!
    LIVE[$bench]=1
    for ((i = 0; i < 650; i++)); do
      members=$("$BIN/chatctl" --socket "$SRV_ADMIN" --timeout 5 --json stats 2>/dev/null |
        grep -o '"members":[0-9]*' | cut -d: -f2) || true
      if [[ $members == "$CLIENTS" ]]; then
        storm=$(python3 -c "print(f'{$(cpu "$SRV_PID") - $cpu0:.3f}')")
        break
      fi
      kill -0 "$bench" 2>/dev/null || break
      sleep 0.1
    done
    wait "$bench" || log "chatbench failed against $BIN"
    unset "LIVE[$bench]"
    stop_pid "$SRV_PID"
    setup=$(grep -o '"setup_s": [0-9.]*' "$SOCK_DIR/$tag.json" | cut -d' ' -f2) || setup=null
    echo "$BIN rep $rep: setup ${setup}s, storm CPU ${storm}s, listen overflows $(($(overflows) - drops0))"
  done
done
