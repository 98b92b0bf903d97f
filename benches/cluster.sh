#!/usr/bin/env bash
# Cluster benchmark (issue 14): one room across three groupchatd nodes joined through NATS
# JetStream, against one node with [cluster] and one node alone, all driven by chatbench
# (benches/chatbench) with its clients spread round-robin over the nodes.
#
# Builds the release binaries, starts one nats-server with JetStream on a free loopback port and
# a store in a temporary directory, then runs the scenarios (see usage) REPS times, interleaved,
# each against freshly started daemons, and prints a markdown table of medians; writes it with
# every raw result to target/bench-results/cluster-<UTC time>/ and to
# target/bench-results/cluster.md. Every wait and every run is bounded, and no new run starts once
# the budget (CLUSTER_BENCH_BUDGET_SECS, default 600) is spent. Only processes this script started
# are stopped, by PID.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/cluster.sh [--quick] [--secs N] [--baseline GROUPCHATD]

  --quick       one repetition instead of three (a smoke run)
  --secs N      how long the senders send (default 10): N x 20 lines each
  --baseline B  also run S1-alone against the groupchatd binary B (e.g. one built before the
                cluster support), interleaved, to show that the daemon without [cluster] did not
                get slower; the ratio is reported

Scenarios: one room, 600 clients on 127.0.0.1, the first 30 of them senders of 20 lines/s each
(64-byte lines, every line its own write(), staggered evenly over the 50 ms period, as chatbench
--rate does), for N seconds.

  K3        three nodes (node_name a, b, c; each its own port and admin socket) with [cluster]
            on the one nats-server; chatbench connects client i to node i % 3, so 200 clients
            per node and 10 senders per node; every line reaches 199 clients on its own node
            and 400 on the others
  K1        one node with [cluster] on the same nats-server: all 600 clients on it
  S1-alone  one node without [cluster]: the daemon as it runs without NATS

Every cluster run gets its own cluster `name` (the prefix of the stream, buckets and subjects), so
no run sees another's history, nicknames or presence. groupchatd runs with flood_rate = 1e6,
flood_burst = 100000 (limits lifted, limiter in place), max_clients_per_ip = 0, no HTTP listener,
everything else at its default.

Figures: loss, duplicates and reordering across all 600 receivers; latency of every delivery and
of the cross-node ones (sender and receiver on different nodes); CPU in the window from the end of
set-up to the last delivery (chatbench --pid, /proc/PID/task/*/schedstat) of each node per
million deliveries to that node's clients, of all nodes per million deliveries, and of
nats-server per million deliveries.

When the groupchatd built here does not accept [cluster] yet (its --check-config refuses it),
K3 runs as a stand-in, K3-standin: one plain daemon listed three times, which checks the address
spreading, the accounting and this script (NATS start and stop included), not a cluster; K1 is
skipped.

nats-server comes from the Debian package `nats-server` (2.9 in bookworm); when it is missing and
we are root, it is installed.

Environment: CLUSTER_BENCH_BUDGET_SECS (default 600), BENCH_OUT (default target/bench-results).
EOF
}

REPS=3
SECS=10
BASELINE=""
while (($#)); do
  case "$1" in
    --quick) REPS=1 ;;
    --secs)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "cluster.sh: --secs needs a whole number" >&2; exit 2; }
      SECS=$2
      shift
      ;;
    --baseline)
      [[ -x ${2:-} ]] || { echo "cluster.sh: --baseline needs an executable" >&2; exit 2; }
      BASELINE=$(realpath "$2")
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
BUDGET=${CLUSTER_BENCH_BUDGET_SECS:-600}
OUT_BASE=$(realpath -m "${BENCH_OUT:-target/bench-results}")
RUN_DIR="$OUT_BASE/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
# Unix sockets (admin) need an absolute path under 108 bytes: keep them short. The NATS store
# lives here too, so it goes with the run.
SOCK_DIR=$(mktemp -d /tmp/groupchatd-cluster.XXXXXX)
RESULTS="$RUN_DIR/results.jsonl"
BIN=target/release
HARNESS=(python3 benches/harness.py)
log() { printf '[cluster.sh %3ds] %s\n' "$SECONDS" "$*" >&2; }
# The processes it starts, stopped only by PID (LIVE, stop_pid, over_budget, start_server).
source benches/procs.sh

CLIENTS=600
SENDERS=30
RATE=20
MESSAGES=$((RATE * SECS))
# chatbench's bound on one run: set-up of 600 clients, the sending, the drain, with room to spare.
LIMIT=$((SECS + 45))

# ---- tools ---------------------------------------------------------------------------------

if ! command -v nats-server >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing nats-server (Debian package nats-server)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get -o DPkg::Lock::Timeout=60 update -qq || true
    timeout 300 apt-get -o DPkg::Lock::Timeout=60 install -y -qq --no-install-recommends \
      nats-server || true
  fi
  command -v nats-server >/dev/null || { log "nats-server is not installed (Debian package nats-server)"; exit 1; }
fi

mkdir -p "$RUN_DIR"
# Other work on the machine moves the figures (CPU per delivery falls when the cores are
# saturated, as more lines share each write): the report states the load around the runs.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "building release binaries"
timeout 900 cargo build --release --locked -p groupchatd -p chatbench >&2

# 600 connections on chatbench's side and on the servers'.
ulimit -n "$(ulimit -Hn)"
log "open file limit $(ulimit -n); results in $RUN_DIR"

# ---- configuration -------------------------------------------------------------------------

BASE_CONFIG='# Flood limits lifted (the limiter still runs), no per-address cap (every client is
# 127.0.0.1), no HTTP listener (a run never competes for its port); the rest at its defaults.
http_listen = []
flood_rate = 1e6
flood_burst = 100000
max_clients_per_ip = 0'
CONFIG="$RUN_DIR/alone.toml"
printf '%s\n' "$BASE_CONFIG" >"$CONFIG"

NODE_NAMES=(a b c)
# start_server runs "$BIN/groupchatd": the baseline gets a directory of its own under that name.
if [[ -n $BASELINE ]]; then
  mkdir "$SOCK_DIR/baseline"
  ln -s "$BASELINE" "$SOCK_DIR/baseline/groupchatd"
fi

# A prefix for the cluster names of this invocation: [A-Za-z0-9_-], unique per run below.
NAME_PREFIX="cb$(date -u +%H%M%S)$$"

# node_config FILE CLUSTER-NAME NODE-NAME: a node's configuration, with [cluster].
node_config() {
  printf '%s\n\n[cluster]\nnats_urls = ["nats://127.0.0.1:%s"]\nname = "%s"\nnode_name = "%s"\n' \
    "$BASE_CONFIG" "$NATS_PORT" "$2" "$3" >"$1"
}

# ---- nats-server ---------------------------------------------------------------------------

NATS_PORT=$("${HARNESS[@]}" port)
NATS_LOG="$RUN_DIR/nats-server.log"
: >"$NATS_LOG"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$SOCK_DIR/nats" </dev/null >/dev/null \
  2>"$NATS_LOG" &
NATS_PID=$!
LIVE[$NATS_PID]=1
for ((i = 0; i < 200; i++)); do
  ss -Hltn "sport = :$NATS_PORT" | grep -q . && grep -q 'Server is ready' "$NATS_LOG" && break
  kill -0 "$NATS_PID" 2>/dev/null || break
  sleep 0.05
done
if ! grep -q 'Server is ready' "$NATS_LOG"; then
  log "nats-server did not start; see $NATS_LOG"
  exit 1
fi
NATS_VERSION=$(nats-server --version 2>&1 | head -1)
log "$NATS_VERSION: JetStream on 127.0.0.1:$NATS_PORT, PID $NATS_PID"

# Does this groupchatd take [cluster]? Its --check-config says (exit 0 valid, 78 not).
CLUSTER=true
node_config "$RUN_DIR/probe.toml" "${NAME_PREFIX}probe" probe
if ! "$BIN/groupchatd" --config "$RUN_DIR/probe.toml" --check-config >"$RUN_DIR/probe.out" 2>&1; then
  CLUSTER=false
  log "this groupchatd does not accept [cluster] ($(tail -1 "$RUN_DIR/probe.out")):" \
    "K3 runs as a stand-in (one plain daemon listed three times), K1 is skipped"
fi

# ---- one run -------------------------------------------------------------------------------

# wait_link ADMIN-SOCKET LOG: until the node reports its cluster link up, in `chatctl stats` or
# in its log (`cluster link up`, event="cluster_link"); bounded: 20 s.
wait_link() {
  local i reply
  for ((i = 0; i < 100; i++)); do
    grep -q 'cluster link up' "$2" && return 0
    reply=$("$BIN/chatctl" --socket "$1" --timeout 5 --json stats 2>/dev/null) || reply=""
    [[ $reply =~ \"link\":\ *\"up\" ]] && return 0
    sleep 0.2
  done
  return 1
}

# run SCENARIO SERVER REP: SERVER is groupchatd (this build) or baseline (--baseline).
run() {
  local scen=$1 server=$2 rep=$3 tag="$1-$2-$3" rc=0 n nodes=1 cluster=false bin=$BIN
  local addrs=() pids=() roles=() node name="${NAME_PREFIX}r${1//[^A-Za-z0-9]/}x$3"
  local error=""
  case "$scen" in
    K3) nodes=3 cluster=true ;;
    K1) cluster=true ;;
  esac
  [[ $server == baseline ]] && bin=$SOCK_DIR/baseline
  for ((n = 0; n < nodes; n++)); do
    node=${NODE_NAMES[n]}
    local config=$CONFIG
    if $cluster; then
      config="$RUN_DIR/$tag.$node.toml"
      node_config "$config" "$name" "$node"
    fi
    if ! BIN=$bin start_server groupchatd "$tag.$node" "$config"; then
      error="node $node did not start"
      break
    fi
    pids+=("$SRV_PID")
    addrs+=("$SRV_ADDR")
    roles+=("\"$node\"")
    if $cluster && ! wait_link "$SRV_ADMIN" "$RUN_DIR/$tag.$node.server.log"; then
      error="node $node: cluster link not up within 20 s"
      break
    fi
  done
  # The stand-in: one plain daemon listed three times, so the clients spread as in K3.
  [[ $scen == K3-standin && -z $error ]] && addrs=("${addrs[0]}" "${addrs[0]}" "${addrs[0]}")
  if [[ -z $error ]]; then
    pids+=("$NATS_PID")
    roles+=('"nats"')
    timeout -k 5 $((LIMIT + 30)) "$BIN/chatbench" fanout \
      --addr "$(IFS=,; echo "${addrs[*]}")" --pid "$(IFS=,; echo "${pids[*]}")" \
      --clients "$CLIENTS" --senders "$SENDERS" --messages "$MESSAGES" --rate "$RATE" --size 64 \
      --hello "${scen//[^A-Za-z0-9]/}u{i}" --timeout "$LIMIT" --json \
      >"$RUN_DIR/$tag.json" 2>"$RUN_DIR/$tag.err" || rc=$?
  else
    rc=1
    log "$tag: $error"
  fi
  local alive=true pid
  for pid in "${pids[@]}"; do
    [[ $pid == "$NATS_PID" ]] && continue
    kill -0 "$pid" 2>/dev/null || alive=false
    stop_pid "$pid"
  done
  kill -0 "$NATS_PID" 2>/dev/null || { alive=false; log "nats-server exited; see $NATS_LOG"; }
  "${HARNESS[@]}" record --out "$RESULTS" --scenario "$scen" --server "$server" --rep "$rep" \
    --rc "$rc" --report "$RUN_DIR/$tag.json" --stderr "$RUN_DIR/$tag.err" \
    --server-log "$RUN_DIR/$tag.a.server.log" "server_alive=$alive" \
    "roles=[$(IFS=,; echo "${roles[*]}")]" ${error:+"error=$error"}
  log "$tag: exit $rc"
}

# ---- the runs ------------------------------------------------------------------------------

if $CLUSTER; then
  SCENARIOS=(K3 K1 S1-alone)
else
  SCENARIOS=(K3-standin S1-alone)
fi
# A rough upper bound of one run in seconds, to stop starting runs the budget cannot finish.
COST=$((SECS + 20))
for ((rep = 1; rep <= REPS; rep++)); do
  for scen in "${SCENARIOS[@]}"; do
    servers=(groupchatd)
    [[ $scen == S1-alone && -n $BASELINE ]] && servers+=(baseline)
    for server in "${servers[@]}"; do
      if over_budget "$COST"; then
        log "budget of $BUDGET s spent: skipping $scen $server rep $rep"
        "${HARNESS[@]}" record --out "$RESULTS" --scenario "$scen" --server "$server" \
          --rep "$rep" --rc 3 "error=skipped: the budget of $BUDGET s was spent"
        continue
      fi
      run "$scen" "$server" "$rep"
    done
  done
done
stop_pid "$NATS_PID"

# ---- the report ----------------------------------------------------------------------------

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || cpu_model="?"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock 2>/dev/null || commit="$commit (modified)"
"${HARNESS[@]}" cluster-table "$RESULTS" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --nproc "$(nproc)" --cpu "$cpu_model" --kernel "$(uname -r)" --commit "$commit" \
  --rustc "$(rustc --version)" --nats "$NATS_VERSION" --reps "$REPS" --secs "$SECS" \
  --baseline "${BASELINE:-none}" --load-start "$LOAD_START" \
  --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" >"$RUN_DIR/report.md"
cp "$RUN_DIR/report.md" "$OUT_BASE/cluster.md"
cat "$RUN_DIR/report.md"
log "done in $SECONDS s; report: $RUN_DIR/report.md (also $OUT_BASE/cluster.md)"
