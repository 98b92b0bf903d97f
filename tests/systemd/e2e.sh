#!/usr/bin/env bash
# End-to-end test of groupchatd under a real systemd, booted with systemd-nspawn.
#
#   tests/systemd/e2e.sh BUILD_DIR         (BUILD_DIR holds the built groupchatd and chatctl)
#   tests/systemd/e2e.sh --deb FILE.deb    (the package from packaging/build-deb.sh instead)
#
# Boots a throwaway systemd (private network) and installs either the binaries and the real units
# from packaging/ with packaging/install.sh (root: tmpfs + the host's /usr read-only), or the .deb
# with dpkg (root: a copy-on-write overlay of the host's, so /usr is writable), then checks what an operator
# does: start (returns only once ready), chat, status text, chatctl list/announce/kick as root over the
# RuntimeDirectory socket, reload (good and broken), journal fields, stop, socket activation, and a
# config error failing the start with status 78. Exit 0 all passed, 1 a check failed, 77 skipped
# (not root, or systemd-nspawn missing). Everything it creates is removed on exit.
set -euo pipefail

DEB=""
if [ "${1:-}" = --deb ]; then
  DEB=$(realpath "${2:?usage: e2e.sh --deb FILE.deb}")
else
  BUILD_DIR=$(realpath "${1:?usage: e2e.sh BUILD_DIR | --deb FILE.deb}")
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BOOT_TIMEOUT=60
STEP_TIMEOUT=30

[ "$(id -u)" = 0 ] || { echo "SKIP: the systemd end-to-end test needs root"; exit 77; }
command -v systemd-nspawn >/dev/null || { echo "SKIP: systemd-nspawn not installed (apt-get install systemd-container)"; exit 77; }
command -v nsenter >/dev/null || { echo "SKIP: nsenter not installed"; exit 77; }

MACHINE=gcd-e2e-$$
WORK=$(mktemp -d /tmp/gcd-e2e.XXXXXX)
PAYLOAD=$WORK/payload
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok:   $*"; }

mkdir -p "$PAYLOAD/bin"
cp "$ROOT/tests/systemd/chatclient.py" "$PAYLOAD/"
OVERLAY=""
if [ -n "$DEB" ]; then
  cp "$DEB" "$PAYLOAD/groupchatd.deb"
  # dpkg needs a writable /usr: boot a copy-on-write overlay of the host's root (nspawn refuses
  # --volatile=overlay on / itself). Writes land in a tmpfs and vanish with it.
  OVERLAY=$WORK/overlay   # mounted below, once the cleanup trap is set
  ROOTFS=(--directory="$OVERLAY/root")
else
  cp "$BUILD_DIR/groupchatd" "$BUILD_DIR/chatctl" "$PAYLOAD/bin/"
  cp -r "$ROOT/packaging" "$ROOT/config" "$ROOT/README.md" "$PAYLOAD/"
  ROOTFS=(--directory=/ --volatile=yes)
fi



# nspawn wants its own cgroup; this VM has a hybrid hierarchy, a pure v2 host has one tree.
CGROUPS=()
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  CGROUPS=("/sys/fs/cgroup/$MACHINE")
else
  [ -d /sys/fs/cgroup/systemd ] && CGROUPS+=("/sys/fs/cgroup/systemd/$MACHINE")
  [ -d /sys/fs/cgroup/unified ] && CGROUPS+=("/sys/fs/cgroup/unified/$MACHINE")
fi
HAD_NSPAWN_DIR=no; [ -e /run/systemd/nspawn ] && HAD_NSPAWN_DIR=yes
HAD_NSPAWN_ROOT=no; [ -e /run/systemd/nspawn-root ] && HAD_NSPAWN_ROOT=yes
NSPAWN_PID=""
BACKGROUND=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null; done
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    kill -TERM "$NSPAWN_PID"
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID"
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  for cg in "${CGROUPS[@]}"; do [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null; done
  rm -rf "/run/systemd/nspawn/propagate/$MACHINE"
  [ "$HAD_NSPAWN_DIR" = no ] && rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null
  [ "$HAD_NSPAWN_ROOT" = no ] && rmdir /run/systemd/nspawn-root 2>/dev/null
  if [ "$rc" != 0 ] && [ -f "$WORK/console.log" ]; then echo "---- container console (tail)"; tail -20 "$WORK/console.log"; fi
  if [ -n "$OVERLAY" ]; then umount "$OVERLAY/root" 2>/dev/null; umount "$OVERLAY" 2>/dev/null; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

if [ -n "$OVERLAY" ]; then
  mkdir -p "$OVERLAY"
  mount -t tmpfs tmpfs "$OVERLAY"
  mkdir -p "$OVERLAY/upper" "$OVERLAY/work" "$OVERLAY/root"
  mount -t overlay overlay -o lowerdir=/,upperdir="$OVERLAY/upper",workdir="$OVERLAY/work" "$OVERLAY/root"
fi

for cg in "${CGROUPS[@]}"; do mkdir -p "$cg"; done
(
  for cg in "${CGROUPS[@]}"; do echo "$BASHPID" > "$cg/cgroup.procs"; done
  exec systemd-nspawn "${ROOTFS[@]}" --boot -M "$MACHINE" --register=no --keep-unit \
      --private-network --bind-ro="$PAYLOAD":/opt/gcd --console=read-only \
      -- systemd.firstboot=off systemd.unit=multi-user.target
) </dev/null >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!

# The container's PID 1 is nspawn's child once it has exec'd systemd.
LEADER=""
for _ in $(seq 1 $((BOOT_TIMEOUT * 10))); do
  kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited during boot"
  for c in $(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null); do
    [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ] && LEADER=$c
  done
  [ -n "$LEADER" ] && break
  sleep 0.1
done
[ -n "$LEADER" ] || fail "no systemd in the container after ${BOOT_TIMEOUT}s"
for _ in $(seq 1 $((BOOT_TIMEOUT * 10))); do
  [ -S /proc/"$LEADER"/root/run/systemd/private ] && break
  sleep 0.1
done

in_ct() {
  timeout "$STEP_TIMEOUT" nsenter -t "$LEADER" -m -u -i -n -p -r -w \
    env -i PATH=/opt/groupchatd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
state=$(in_ct systemctl is-system-running --wait 2>&1 || true)
case "$state" in running|degraded) ;; *) fail "container did not boot: $state" ;; esac
ok "container booted ($state)"

# A client that stays connected in the background, recording what it receives in the container's /tmp.
client_bg() { # NICK [chatclient args...]
  local nick=$1; shift
  in_ct python3 /opt/gcd/chatclient.py 7000 "$nick" "/tmp/$nick.out" --hold 120 "$@" &
  BACKGROUND+=($!)
}
# Waits (bounded) until the container file /tmp/NICK.out has a line containing TEXT.
wait_line() { # NICK TEXT
  for _ in $(seq 1 100); do
    in_ct grep -qF -- "$2" "/tmp/$1.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "---- /tmp/$1.out:"; in_ct cat "/tmp/$1.out" 2>/dev/null || true
  fail "$1 never received: $2"
}
set_config() { in_ct sh -c 'cat > /etc/groupchatd/groupchatd.toml' <<<"$1"; }

# ---------------------------------------------------------------- install
if [ -n "$DEB" ]; then
  # A Debian host may forbid starting services from maintainer scripts (policy-rc.d); the container
  # is ours, so allow it, as on a normal system.
  in_ct rm -f /usr/sbin/policy-rc.d
  in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /opt/gcd/groupchatd.deb >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; fail "dpkg -i"; }
  in_ct getent passwd groupchatd >/dev/null || fail "the package did not create the groupchatd user"
  in_ct test -f /usr/share/man/man8/groupchatd.8.gz || fail "the package has no groupchatd(8)"
  in_ct test -f /etc/groupchatd/groupchatd.toml || fail "the package has no configuration file"
  [ "$(in_ct systemctl is-enabled groupchatd)" = enabled ] || fail "the package did not enable the service"
  [ "$(in_ct systemctl is-active groupchatd)" = active ] || fail "the package did not start the service"
  in_ct systemctl stop groupchatd
  ok "installed the .deb with dpkg (user created, service enabled and started, man page, config)"
else
  in_ct sh -c 'cd /opt/gcd && BUILD_DIR=/opt/gcd/bin PREFIX=/opt/groupchatd SYSCONFDIR=/etc \
    UNITDIR=/etc/systemd/system SYSUSERSDIR=/etc/sysusers.d sh packaging/install.sh' >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; fail "install.sh"; }
  in_ct getent passwd groupchatd >/dev/null || fail "install.sh did not create the groupchatd user"
  ok "installed with packaging/install.sh (user groupchatd created by sysusers)"
fi

# ---------------------------------------------------------------- start and chat
in_ct systemctl start groupchatd || { in_ct journalctl -u groupchatd --no-pager | tail -20; fail "systemctl start"; }
# Type=notify: start returned, so the daemon said READY=1 after binding everything. No retries here.
in_ct test -S /run/groupchatd/admin.sock || fail "admin socket missing right after start"
in_ct python3 -c 'import socket; socket.create_connection(("127.0.0.1", 7000), timeout=2)' \
  || fail "chat port not accepting right after start"
[ "$(in_ct systemctl is-active groupchatd)" = active ] || fail "not active after start"
main_pid=$(in_ct systemctl show -P MainPID groupchatd)
in_ct grep -q "^Uid:[[:space:]]*$(in_ct id -u groupchatd)[[:space:]]" "/proc/$main_pid/status" || fail "daemon does not run as user groupchatd"
ok "systemctl start returned once ready; running as user groupchatd"

client_bg alice
wait_line alice "*** Type /help for commands."
in_ct python3 /opt/gcd/chatclient.py 7000 bob /tmp/bob.out --send "hello from bob" --send "/quit done" --hold 10 \
  || fail "bob's session did not end with the server closing it"
wait_line alice "<bob> hello from bob"
wait_line alice "*** bob left (quit: done)"
ok "two clients chat through the installed service"

status=""
for _ in $(seq 1 50); do
  status=$(in_ct systemctl show -P StatusText groupchatd)
  case "$status" in *"1 clients (1 joined)"*) break ;; esac
  sleep 0.1
done
case "$status" in "listening on 127.0.0.1:7000; 1 clients (1 joined); "*" lines relayed") ;; *) fail "StatusText: $status" ;; esac
in_ct systemctl status groupchatd --no-pager >"$WORK/status.txt" 2>&1 || true
grep -q "Status: \"listening on" "$WORK/status.txt" || { cat "$WORK/status.txt"; fail "systemctl status shows no Status line"; }
ok "systemctl status: $status"

# ---------------------------------------------------------------- chatctl as root
in_ct chatctl list | grep -q alice || fail "chatctl list does not show alice"
[ "$(in_ct chatctl announce maintenance at noon)" = "announced to 1 client" ] || fail "chatctl announce"
wait_line alice "*** maintenance at noon"
client_bg dave
wait_line alice "*** dave joined"
in_ct chatctl kick dave --reason spam | grep -q "kicked dave" || fail "chatctl kick"
wait_line dave "*** you were kicked: spam"
wait_line alice "*** dave left (kicked: spam)"
ok "chatctl list/announce/kick as root over /run/groupchatd/admin.sock"

# ---------------------------------------------------------------- reload
set_config 'motd = "reloaded motd"'
in_ct systemctl reload groupchatd || fail "systemctl reload with a good config"
in_ct python3 /opt/gcd/chatclient.py 7000 carol /tmp/carol.out --send /quit --hold 10 || fail "carol"
in_ct grep -qxF "*** reloaded motd" /tmp/carol.out || fail "new MOTD not applied"
set_config 'max_line_bytes = 1'
if in_ct systemctl reload groupchatd 2>/dev/null; then fail "reload with a broken config succeeded"; fi
[ "$(in_ct systemctl is-active groupchatd)" = active ] || fail "daemon died on a broken reload"
in_ct python3 /opt/gcd/chatclient.py 7000 erin /tmp/erin.out --send /quit --hold 10 || fail "erin"
in_ct grep -qxF "*** reloaded motd" /tmp/erin.out || fail "old config not kept after a failed reload"
in_ct chatctl list | grep -q alice || fail "alice was disconnected by a reload"
[ "$(in_ct systemctl show -P MainPID groupchatd)" = "$main_pid" ] || fail "MainPID changed on reload"
ok "reload applied a new MOTD without dropping alice; a broken config failed the reload and was not applied"
set_config 'motd = "reloaded motd"'

# ---------------------------------------------------------------- journal
in_ct journalctl -u groupchatd EVENT=join -o cat --no-pager | grep -q "joined" || fail "journal: no EVENT=join entries"
in_ct journalctl -u groupchatd EVENT=kick -o json --no-pager | grep -q '"NICK":"dave"' || fail "journal: EVENT=kick lacks NICK=dave"
in_ct journalctl -u groupchatd SYSLOG_IDENTIFIER=groupchatd -o cat --no-pager | grep -q "ready" || fail "journal: no ready entry"
ok "journalctl -u groupchatd EVENT=join / EVENT=kick show structured events"

# ---------------------------------------------------------------- stop
in_ct systemctl stop groupchatd || fail "systemctl stop"
wait_line alice "*** server shutting down"
[ "$(in_ct systemctl show -P Result groupchatd)" = success ] || fail "Result after stop: $(in_ct systemctl show -P Result groupchatd)"
in_ct test ! -e /run/groupchatd/admin.sock || fail "admin socket left behind after stop"
ok "systemctl stop told the client and ended with Result=success"

# ---------------------------------------------------------------- socket activation
in_ct systemctl start groupchatd.socket groupchatd-admin.socket || fail "starting the socket units"
[ "$(in_ct systemctl is-active groupchatd.service || true)" = inactive ] || fail "service started before the first connection"
in_ct python3 /opt/gcd/chatclient.py 7000 frank /tmp/frank.out --send /quit --hold 10 || fail "frank"
in_ct grep -qxF "*** reloaded motd" /tmp/frank.out || fail "no greeting through the activated socket"
[ "$(in_ct systemctl is-active groupchatd.service)" = active ] || fail "service not active after activation"
in_ct chatctl stats | grep -q "listening on" || fail "chatctl over the inherited admin socket"
in_ct journalctl -u groupchatd -o cat --no-pager | grep -q "using a socket passed by systemd" || fail "daemon did not use the passed sockets"
in_ct systemctl stop groupchatd.socket groupchatd-admin.socket groupchatd.service || fail "stopping activation units"
ok "socket activation: the first connection started the service with the named sockets"

# ---------------------------------------------------------------- config error before ready
in_ct systemctl reset-failed groupchatd 2>/dev/null || true
set_config 'frobnicate = 1'
if in_ct systemctl start groupchatd 2>/dev/null; then fail "start with a bad config succeeded"; fi
[ "$(in_ct systemctl show -P Result groupchatd)" = exit-code ] || fail "Result after a bad config: $(in_ct systemctl show -P Result groupchatd)"
in_ct journalctl -u groupchatd -o cat --no-pager | grep -q "key 'frobnicate'" || fail "journal does not name the bad key"
[ "$(in_ct systemctl show -P NRestarts groupchatd)" = 0 ] || fail "a config error caused restarts"
ok "a config error fails systemctl start (exit 78, key named, no restart loop)"

echo "ALL PASSED"
