#!/usr/bin/env bash
# End-to-end test of groupchatd under a real systemd, booted with systemd-nspawn.
#
#   tests/systemd/e2e.sh BUILD_DIR         (BUILD_DIR holds the built groupchatd and chatctl)
#   tests/systemd/e2e.sh --deb FILE.deb    (the package from packaging/build-deb.sh instead)
#   tests/systemd/e2e.sh --deb FILE.deb --upgrade-to NEXT.deb
#                                          (and then a package upgrade under connected clients)
#
# Boots a throwaway systemd (private network) and installs either the binaries and the real units
# from packaging/ with packaging/install.sh (root: tmpfs + the host's /usr read-only), or the .deb
# with dpkg (root: a copy-on-write overlay of the host's, so /usr is writable), then checks what an operator
# does: start (returns only once ready), chat, status text, chatctl list/announce/kick as root over the
# RuntimeDirectory socket, reload (good and broken), journal fields, stop, socket activation, and a
# config error failing the start with status 78. Then an upgrade while two clients are connected:
# `chatctl upgrade`, or with --upgrade-to, installing NEXT.deb (a higher version) with dpkg so
# that postinst hands the service to the new binary. Checked: nobody disconnected or announced,
# both still chat, MainPID changed to a child of systemd, the service never left `active`, no
# restart, one EVENT=upgrade in the journal, the watchdog fed by the new process, a failed upgrade
# rolled back, a graceful stop, systemd restarting the new main process when it dies, and with
# --upgrade-to postinst's stopped-service and fallback paths. Exit 0 all passed, 1 a check failed, 77 skipped
# (not root, or systemd-nspawn missing). Everything it creates is removed on exit.
set -euo pipefail

DEB=""
NEXT_DEB=""
if [ "${1:-}" = --deb ]; then
  DEB=$(realpath -e "${2:?usage: e2e.sh --deb FILE.deb [--upgrade-to NEXT.deb]}")
  if [ "${3:-}" = --upgrade-to ]; then
    NEXT_DEB=$(realpath -e "${4:?usage: e2e.sh --deb FILE.deb --upgrade-to NEXT.deb}")
    NEXT_VERSION=$(dpkg-deb -f "$NEXT_DEB" Version)
    if ! dpkg --compare-versions "$NEXT_VERSION" gt "$(dpkg-deb -f "$DEB" Version)"; then
      echo "e2e.sh: $NEXT_DEB ($NEXT_VERSION) is not a newer version than $DEB" >&2; exit 2
    fi
  elif [ -n "${3:-}" ]; then
    echo "usage: e2e.sh --deb FILE.deb [--upgrade-to NEXT.deb]" >&2; exit 2
  fi
else
  BUILD_DIR=$(realpath -e "${1:?usage: e2e.sh BUILD_DIR | --deb FILE.deb}")
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
  if [ -n "$NEXT_DEB" ]; then
    cp "$NEXT_DEB" "$PAYLOAD/groupchatd-next.deb"
  fi
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
  timeout "${IN_CT_TIMEOUT:-$STEP_TIMEOUT}" nsenter -t "$LEADER" -m -u -i -n -p -r -w \
    env -i PATH=/opt/groupchatd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
state=$(in_ct systemctl is-system-running --wait 2>&1 || true)
case "$state" in running|degraded) ;; *) fail "container did not boot: $state" ;; esac
ok "container booted ($state)"

# A client that stays connected in the background, recording what it receives in the container's /tmp.
client_bg() { # NICK [chatclient args...]
  local nick=$1; shift
  # Bounded by its own --hold; the upgrade scenario keeps clients longer than one step.
  IN_CT_TIMEOUT=130 in_ct python3 /opt/gcd/chatclient.py 7000 "$nick" "/tmp/$nick.out" --hold 120 "$@" &
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

# HTTP on its default address (the container has its own network, so 7080 is free): bound before
# READY=1 like the chat port, and allowed by the unit's sandbox.
healthz() {
  in_ct python3 -c 'import urllib.request, sys
r = urllib.request.urlopen("http://127.0.0.1:7080/healthz", timeout=2)
sys.exit(0 if (r.status, r.read()) == (200, b"ok\n") else 1)'
}
healthz || fail "GET /healthz on 127.0.0.1:7080 right after start"
in_ct python3 -c 'import urllib.request
r = urllib.request.urlopen("http://127.0.0.1:7080/metrics", timeout=2)
assert b"groupchatd_clients{transport=\"tcp\"}" in r.read()' || fail "GET /metrics"
ok "HTTP: /healthz answers 200 and /metrics serves the daemon's metrics"

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

# ---------------------------------------------------------------- upgrade under connected clients
# With --upgrade-to, the package's upgrade (dpkg -i, postinst); otherwise chatctl upgrade itself.
if [ -n "$DEB" ]; then EXE=/usr/bin/groupchatd; else EXE=/opt/groupchatd/bin/groupchatd; fi
{
  show() { in_ct systemctl show -P "$1" groupchatd; }
  # Types LINE into NICK's connection (chatclient.py --input).
  say() { in_ct sh -c 'printf "%s\n" "$2" >"/tmp/$1.in"' sh "$1" "$2"; }
  set_config 'motd = "before the upgrade"'
  in_ct systemctl reset-failed groupchatd 2>/dev/null || true
  # A short watchdog, so that a successor that does not feed it is killed within seconds.
  in_ct mkdir -p /etc/systemd/system/groupchatd.service.d
  in_ct sh -c 'printf "[Service]\nWatchdogSec=4s\n" >/etc/systemd/system/groupchatd.service.d/50-e2e-watchdog.conf'
  in_ct systemctl daemon-reload
  in_ct systemctl start groupchatd || fail "systemctl start before the upgrade"
  [ "$(show WatchdogUSec)" = 4s ] || fail "the watchdog drop-in is not in force: $(show WatchdogUSec)"
  old_pid=$(show MainPID)
  invocation=$(show InvocationID)
  entered=$(show ActiveEnterTimestampMonotonic)
  left=$(show ActiveExitTimestampMonotonic)

  client_bg carl --input /tmp/carl.in
  wait_line carl "*** Type /help for commands."
  client_bg dana --input /tmp/dana.in
  wait_line dana "*** Type /help for commands."
  wait_line carl "*** dana joined"
  say carl "before the upgrade, from carl"
  wait_line dana "<carl> before the upgrade, from carl"
  carl_seen=$(in_ct sh -c 'wc -l </tmp/carl.out')
  dana_seen=$(in_ct sh -c 'wc -l </tmp/dana.out')

  if [ -n "$NEXT_DEB" ]; then
    how="dpkg -i $NEXT_VERSION (postinst quiet)"
    in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /opt/gcd/groupchatd-next.deb >"$WORK/upgrade.log" 2>&1 \
      || { cat "$WORK/upgrade.log"; fail "dpkg -i of the next version"; }
    [ "$(in_ct dpkg-query -W -f='${Version}' groupchatd)" = "$NEXT_VERSION" ] || fail "dpkg did not install $NEXT_VERSION"
    if grep -q "groupchatd:\|chatctl" "$WORK/upgrade.log"; then cat "$WORK/upgrade.log"; fail "postinst was not quiet (fell back to a restart?)"; fi
  else
    how="chatctl upgrade"
    out=$(in_ct chatctl upgrade) || fail "chatctl upgrade: $out"
  fi
  new_pid=$(show MainPID)
  [ "$new_pid" != 0 ] && [ "$new_pid" != "$old_pid" ] || fail "MainPID $new_pid after the upgrade (was $old_pid)"
  # After dpkg -i the old process runs a deleted file; the new one must run the installed one.
  [ "$(in_ct readlink "/proc/$new_pid/exe")" = "$EXE" ] \
    || fail "the new main process does not run $EXE: $(in_ct readlink "/proc/$new_pid/exe")"
  for _ in $(seq 1 50); do in_ct test -d "/proc/$old_pid" || break; sleep 0.1; done
  in_ct test ! -d "/proc/$old_pid" || fail "the old process $old_pid is still running"
  # systemd's own child (see systemd.rs, spawn_for_service_manager), so not supervised as "alien".
  parent=$(in_ct sed -n 's/^PPid:[[:space:]]*//p' "/proc/$new_pid/status")
  [ "$parent" = 1 ] || fail "the new main process's parent is $parent, not systemd"
  [ "$(show ActiveState)/$(show SubState)" = active/running ] || fail "state after the upgrade: $(show ActiveState)/$(show SubState)"
  [ "$(show NRestarts)" = 0 ] || fail "NRestarts $(show NRestarts) after the upgrade"
  # The unit never left `active`: same invocation, no new enter or exit timestamps.
  [ "$(show InvocationID)" = "$invocation" ] || fail "a new invocation: the service was restarted"
  [ "$(show ActiveEnterTimestampMonotonic)" = "$entered" ] && [ "$(show ActiveExitTimestampMonotonic)" = "$left" ] \
    || fail "the service left the active state during the upgrade"
  ok "$how: MainPID $old_pid -> $new_pid (systemd's child, running $EXE), never left active, NRestarts 0"

  # Both directions, and nothing else: no leave/join notice, no line twice.
  say dana "after the upgrade, from dana"
  wait_line carl "<dana> after the upgrade, from dana"
  say carl "after the upgrade, from carl"
  wait_line dana "<carl> after the upgrade, from carl"
  got=$(in_ct tail -n "+$((carl_seen + 1))" /tmp/carl.out)
  [ "$got" = "<dana> after the upgrade, from dana" ] || { printf '%s\n' "$got"; fail "carl saw more than dana's line across the upgrade"; }
  got=$(in_ct tail -n "+$((dana_seen + 1))" /tmp/dana.out)
  [ "$got" = "<carl> after the upgrade, from carl" ] || { printf '%s\n' "$got"; fail "dana saw more than carl's line across the upgrade"; }
  in_ct python3 /opt/gcd/chatclient.py 7000 erin /tmp/erin2.out --send /quit --hold 10 || fail "a new client after the upgrade"
  in_ct grep -qxF "*** before the upgrade" /tmp/erin2.out || fail "the new process did not greet a new client"
  wait_line carl "*** erin left (quit)"
  ok "carl and dana stayed connected and chat both ways, with no notices; a newcomer is served"
  healthz || fail "GET /healthz after the upgrade"
  ok "the HTTP port is served by the new process"

  in_ct journalctl -u groupchatd EVENT=upgrade -o json --no-pager >"$WORK/upgrade.json"
  [ "$(wc -l <"$WORK/upgrade.json")" = 1 ] || { cat "$WORK/upgrade.json"; fail "expected exactly one EVENT=upgrade journal entry"; }
  for field in "\"OLD_PID\":\"$old_pid\"" "\"NEW_PID\":\"$new_pid\"" '"OLD_VERSION":"' '"NEW_VERSION":"' '"PAUSE_MS":"' "\"_PID\":\"$new_pid\""; do
    grep -qF "$field" "$WORK/upgrade.json" || { cat "$WORK/upgrade.json"; fail "EVENT=upgrade lacks $field"; }
  done
  if in_ct journalctl -u groupchatd --no-pager -o cat | grep -i "reception only permitted\|refusing\|not our child\|cannot pin"; then
    fail "systemd refused a notification or does not supervise the new process as its child, or it was not pinned"
  fi
  stats=$(in_ct chatctl --json stats)
  case "$stats" in *'"upgrades":1'*) ;; *) fail "chatctl stats after the upgrade: $stats" ;; esac
  case "$stats" in *"\"pid\":$new_pid"*) ;; *) fail "chatctl stats is not from pid $new_pid: $stats" ;; esac
  ok "journal: one EVENT=upgrade (OLD_PID=$old_pid NEW_PID=$new_pid); chatctl stats: 1 upgrade, pid $new_pid"

  # The watchdog: systemd takes WATCHDOG=1 only from the main PID (NotifyAccess=main) and kills
  # the service 4 s after the last one. Wait until the last ping it took is two periods past
  # the hand-over, checking each time that nothing was killed or restarted meanwhile.
  upgraded_at=$(sed -n 's/.*"__MONOTONIC_TIMESTAMP":"\([0-9]*\)".*/\1/p' "$WORK/upgrade.json")
  [ -n "$upgraded_at" ] || fail "no __MONOTONIC_TIMESTAMP in the EVENT=upgrade entry"
  fed=0
  for _ in $(seq 1 200); do
    [ "$(show MainPID)/$(show ActiveState)/$(show NRestarts)" = "$new_pid/active/0" ] \
      || fail "after the upgrade: MainPID $(show MainPID), $(show ActiveState), NRestarts $(show NRestarts)"
    fed=$(show WatchdogTimestampMonotonic)
    [ "$fed" -gt $((upgraded_at + 8000000)) ] && break
    sleep 0.1
  done
  [ "$fed" -gt $((upgraded_at + 8000000)) ] || fail "no watchdog ping taken 8 s after the upgrade (last at $fed, upgrade at $upgraded_at)"
  ok "the new process feeds the watchdog: last ping $(( (fed - upgraded_at) / 1000 )) ms after the hand-over, still active"

  # A failed upgrade under systemd: rolled back, the same main process serves on.
  if out=$(in_ct chatctl upgrade --binary /bin/false 2>&1); then fail "chatctl upgrade --binary /bin/false succeeded"; fi
  case "$out" in *"exited before it was ready"*) ;; *) fail "chatctl upgrade --binary /bin/false: $out" ;; esac
  [ "$(show MainPID)/$(show ActiveState)/$(show NRestarts)" = "$new_pid/active/0" ] \
    || fail "after a failed upgrade: MainPID $(show MainPID), $(show ActiveState), NRestarts $(show NRestarts)"
  say carl "after the failed upgrade, from carl"
  wait_line dana "<carl> after the failed upgrade, from carl"
  ok "a failed upgrade (--binary /bin/false) rolls back: same MainPID, clients still chat"

  in_ct systemctl stop groupchatd || fail "systemctl stop after the upgrade"
  wait_line carl "*** server shutting down"
  wait_line dana "*** server shutting down"
  [ "$(show Result)" = success ] || fail "Result after stopping the upgraded service: $(show Result)"
  in_ct test ! -d "/proc/$new_pid" || fail "the upgraded process outlived systemctl stop"
  # systemd waited for it to exit after SIGTERM (it does not for a main process that is not its
  # child, here in a container on the legacy cgroup hierarchy: SIGKILL at once).
  if in_ct journalctl -u groupchatd --no-pager -o cat | grep "SIGKILL\|remains running after unit stopped"; then
    fail "systemd killed the upgraded process instead of letting it stop"
  fi
  ok "systemctl stop stops the upgraded process gracefully, which tells its clients"

  if [ -n "$NEXT_DEB" ]; then
    # postinst with the service stopped (but enabled): started, as before; no hand-over attempted.
    in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /opt/gcd/groupchatd-next.deb >"$WORK/reinstall.log" 2>&1 \
      || { cat "$WORK/reinstall.log"; fail "dpkg -i with the service stopped"; }
    if grep -q "groupchatd:\|chatctl" "$WORK/reinstall.log"; then cat "$WORK/reinstall.log"; fail "postinst tried to upgrade a stopped service"; fi
    [ "$(show ActiveState)" = active ] || fail "postinst did not start the enabled, stopped service"
    ok "dpkg -i with the service stopped starts it, as before"
  else
    in_ct systemctl start groupchatd || fail "systemctl start after stopping the upgraded service"
  fi

  # An upgraded main process is supervised like the first: SIGKILL it and Restart=on-failure
  # brings the service back.
  out=$(in_ct chatctl upgrade) || fail "chatctl upgrade: $out"
  killed=$(show MainPID)
  case "$out" in "upgraded: pid $killed "*) ;; *) fail "chatctl upgrade said '$out', MainPID is $killed" ;; esac
  in_ct kill -KILL "$killed"
  for _ in $(seq 1 100); do
    [ "$(show NRestarts)/$(show ActiveState)" = 1/active ] && [ "$(show MainPID)" != "$killed" ] && break
    sleep 0.1
  done
  [ "$(show NRestarts)/$(show ActiveState)" = 1/active ] || fail "no restart after the upgraded process was killed: NRestarts $(show NRestarts), $(show ActiveState)"
  ok "systemd noticed the upgraded main process $killed being killed and restarted the service"

  if [ -n "$NEXT_DEB" ]; then
    # postinst's fallback: chatctl cannot reach the daemon (its admin socket moved), so restart.
    set_config 'admin_socket = "/run/groupchatd/elsewhere.sock"'
    in_ct systemctl restart groupchatd || fail "restart with the admin socket moved"
    invocation=$(show InvocationID)
    in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /opt/gcd/groupchatd-next.deb >"$WORK/fallback.log" 2>&1 \
      || { cat "$WORK/fallback.log"; fail "dpkg -i with chatctl failing"; }
    grep -q "chatctl upgrade failed (exit status 69" "$WORK/fallback.log" \
      || { cat "$WORK/fallback.log"; fail "postinst did not say why it fell back to a restart"; }
    [ "$(show ActiveState)" = active ] && [ "$(show InvocationID)" != "$invocation" ] \
      || fail "postinst did not restart the service when chatctl upgrade failed"
    ok "postinst falls back to a restart, saying why, when chatctl upgrade fails"
  fi
  in_ct systemctl stop groupchatd
}

echo "ALL PASSED"
