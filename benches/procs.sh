# Shared by the load benchmarks (run.sh, rooms.sh): bookkeeping of the processes a script starts,
# so it stops only its own, by PID, and always reaps them, and starting the servers they compare.
# Source it after setting SOCK_DIR (a directory removed at exit), BUDGET (seconds), RUN_DIR, BIN,
# CONFIG, HARNESS and a `log` function; it sets the EXIT/INT/TERM traps.
# Register a started process with `LIVE[$pid]=1`.

# Processes we started and have not reaped yet.
declare -A LIVE=()

# True while $1 is still a child of this shell (not exited, nor its PID reused by another).
ours() { [[ $(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ') == "$$" ]]; }

# Stops process $1 (started by us): SIGTERM, then SIGKILL after 10 s; reaps it.
stop_pid() {
  local pid=$1 i
  [[ -n "${LIVE[$pid]:-}" ]] || return 0
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      ours "$pid" || break
      sleep 0.1
    done
    ours "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  unset "LIVE[$pid]"
}

cleanup() {
  local pid
  for pid in "${!LIVE[@]}"; do
    stop_pid "$pid"
  done
  rm -rf "$SOCK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True once fewer than $1 seconds (default 0) of the budget are left.
over_budget() { ((SECONDS > BUDGET - ${1:-0})); }

# Sets SRV_PID, SRV_ADDR and (groupchatd) SRV_ADMIN for a fresh server $1 named by $2;
# groupchatd reads config file $3 (default $CONFIG).
start_server() {
  local server=$1 tag=$2 config=${3:-$CONFIG} i port
  local log="$RUN_DIR/$tag.server.log"
  SRV_ADDR="" SRV_ADMIN=""
  : >"$log" # exists before the server's redirection does: the polls below read it
  case "$server" in
    groupchatd)
      SRV_ADMIN="$SOCK_DIR/$tag.admin.sock"
      "$BIN/groupchatd" --config "$config" --listen 127.0.0.1:0 --admin-socket "$SRV_ADMIN" \
        </dev/null >/dev/null 2>"$log" &
      SRV_PID=$!
      LIVE[$SRV_PID]=1
      for ((i = 0; i < 200; i++)); do
        SRV_ADDR=$(grep -o 'listening for chat connections addr=[0-9.:]*' "$log" |
          head -1 | cut -d= -f2) || true
        [[ -n "$SRV_ADDR" ]] && break
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.05
      done
      ;;
    ncat)
      port=$("${HARNESS[@]}" port)
      ncat -l --chat --max-conns 20000 127.0.0.1 "$port" </dev/null >/dev/null 2>"$log" &
      SRV_PID=$!
      LIVE[$SRV_PID]=1
      for ((i = 0; i < 200; i++)); do
        if ss -Hltn "sport = :$port" | grep -q .; then
          SRV_ADDR="127.0.0.1:$port"
          break
        fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.05
      done
      # ncat's listen backlog of 10 makes most of a burst of connects hang (see harness.py).
      if [[ -n "$SRV_ADDR" ]]; then
        "${HARNESS[@]}" backlog "$SRV_PID" "$port" 4096 || log "could not raise ncat's backlog"
      fi
      ;;
    refrelay)
      local out="$RUN_DIR/$tag.addr"
      : >"$out"
      "$BIN/refrelay" --listen 127.0.0.1:0 </dev/null >"$out" 2>"$log" &
      SRV_PID=$!
      LIVE[$SRV_PID]=1
      for ((i = 0; i < 200; i++)); do
        SRV_ADDR=$(head -1 "$out")
        [[ -n "$SRV_ADDR" ]] && break
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.05
      done
      ;;
  esac
  if [[ -z "$SRV_ADDR" ]]; then
    log "$server did not start listening; see $log"
    stop_pid "$SRV_PID"
    return 1
  fi
}
