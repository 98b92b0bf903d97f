# Shared by the load benchmarks (run.sh, rooms.sh): bookkeeping of the processes a script starts,
# so it stops only its own, by PID, and always reaps them. Source it after setting SOCK_DIR (a
# directory removed at exit) and BUDGET (seconds); it sets the EXIT/INT/TERM traps.
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
