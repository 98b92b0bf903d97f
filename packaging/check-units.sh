#!/usr/bin/env bash
# Offline checks of the packaging: no running systemd needed, nothing installed on the host.
#
#   bash packaging/check-units.sh [BIN_DIR]
#
# BIN_DIR (or $GROUPCHATD_BIN_DIR; default target/debug) holds built groupchatd and chatctl
# binaries. systemd-analyze verify resolves ExecStart= paths, so the units are checked as copies
# whose /usr/bin/ paths point into BIN_DIR. Every check runs; the exit status is 1 if any failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin_dir=${1:-${GROUPCHATD_BIN_DIR:-$root/target/debug}}
bin_dir=$(cd "$bin_dir" && pwd)
# The service must rate at most this exposure (x10) in `systemd-analyze security`.
threshold=15
units=(groupchatd.service groupchatd.socket groupchatd-admin.socket)
scripts=(install.sh build-deb.sh debian/postinst debian/prerm debian/postrm)

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    if [ -n "${2-}" ]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
}

for tool in systemd-analyze systemd-sysusers; do
    command -v "$tool" >/dev/null || { echo "check-units.sh: $tool is not installed" >&2; exit 2; }
done
for prog in groupchatd chatctl; do
    [ -x "$bin_dir/$prog" ] || { echo "check-units.sh: no $prog in $bin_dir (build first)" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- systemd-analyze verify: exit status 0 is not enough, any output is a finding.
mkdir "$tmp/units"
for unit in "${units[@]}"; do
    sed "/^Exec/s#/usr/bin/#$bin_dir/#g" "$here/$unit" >"$tmp/units/$unit"
done
for unit in "${units[@]}"; do
    if out=$(cd "$tmp/units" && systemd-analyze verify --man=no "$tmp/units/$unit" 2>&1) && [ -z "$out" ]; then
        pass "systemd-analyze verify $unit"
    else
        fail "systemd-analyze verify $unit" "$out"
    fi
done

# --- systemd-analyze security: the overall exposure of the service.
if out=$(systemd-analyze security --offline=yes --threshold=$threshold "$tmp/units/groupchatd.service" 2>&1); then
    status=0
else
    status=$?
fi
exposure=$(printf '%s\n' "$out" | grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' || true)
if [ "$status" -eq 0 ] && [ -n "$exposure" ]; then
    pass "systemd-analyze security (threshold $threshold): $exposure"
else
    fail "systemd-analyze security (threshold $threshold): ${exposure:-no exposure line}" \
        "$(printf '%s\n' "$out" | grep -E '^(✗|→)' || printf '%s' "$out")"
fi

# --- sysusers: the user and both groups are created in an empty root.
mkdir -p "$tmp/sysroot/etc"
if out=$(systemd-sysusers --root="$tmp/sysroot" "$here/groupchatd.sysusers" 2>&1) \
    && grep -Eq '^groupchatd:x:[0-9]+:[0-9]+:[^:]*:/:[^:]*nologin$' "$tmp/sysroot/etc/passwd" \
    && grep -Eq '^groupchatd:x:[0-9]+:' "$tmp/sysroot/etc/group" \
    && grep -Eq '^groupchatd-admin:x:[0-9]+:' "$tmp/sysroot/etc/group"; then
    pass "systemd-sysusers creates groupchatd (nologin, home /), groups groupchatd and groupchatd-admin"
else
    fail "systemd-sysusers" "$out
$(cat "$tmp/sysroot/etc/passwd" "$tmp/sysroot/etc/group" 2>&1)"
fi

# --- shell syntax of the scripts.
for script in "${scripts[@]}"; do
    if out=$(sh -n "$here/$script" 2>&1); then pass "sh -n $script"; else fail "sh -n $script" "$out"; fi
done
if out=$(bash -n "$here/check-units.sh" 2>&1); then pass "bash -n check-units.sh"; else fail "bash -n check-units.sh" "$out"; fi
if command -v shellcheck >/dev/null; then
    if out=$(shellcheck "${scripts[@]/#/$here/}" "$here/check-units.sh" 2>&1); then
        pass "shellcheck"
    else
        fail "shellcheck" "$out"
    fi
fi

# --- install.sh into a staging root, as a distribution package would.
stage=$tmp/stage
if out=$(DESTDIR=$stage PREFIX=/usr BUILD_DIR=$bin_dir sh "$here/install.sh" 2>&1); then
    pass "install.sh DESTDIR=... PREFIX=/usr"
else
    fail "install.sh DESTDIR=... PREFIX=/usr" "$out"
fi
expect() { # TEST PATH DESCRIPTION
    if [ "$1" "$stage$2" ]; then pass "installed $2 ($3)"; else fail "installed $2 ($3)"; fi
}
expect -x /usr/bin/groupchatd executable
expect -x /usr/bin/chatctl executable
for unit in "${units[@]}"; do expect -s "/usr/lib/systemd/system/$unit" unit; done
expect -s /usr/lib/sysusers.d/groupchatd.conf sysusers
expect -s /etc/groupchatd/groupchatd.toml configuration
expect -s /usr/share/doc/groupchatd/README.md documentation
for prog in groupchatd chatctl; do
    expect -s "/usr/share/bash-completion/completions/$prog" "bash completion"
    expect -s "/usr/share/zsh/vendor-completions/_$prog" "zsh completion"
    expect -s "/usr/share/fish/vendor_completions.d/$prog.fish" "fish completion"
done
for page in /usr/share/man/man8/groupchatd.8 /usr/share/man/man1/chatctl.1; do
    if grep -q '^\.TH ' "$stage$page" 2>/dev/null; then
        pass "installed $page (man page)"
    else
        fail "installed $page (man page)"
    fi
    if command -v groff >/dev/null; then
        # -ww: every warning; -z: no output. A clean page prints nothing.
        if out=$(groff -man -Tutf8 -ww -z "$stage$page" 2>&1) && [ -z "$out" ]; then
            pass "groff renders $page without warnings"
        else
            fail "groff renders $page without warnings" "$out"
        fi
    fi
done
if out=$(bash -n "$stage/usr/share/bash-completion/completions/chatctl" 2>&1); then
    pass "bash -n chatctl completion"
else
    fail "bash -n chatctl completion" "$out"
fi
if grep -q "^ExecStart=/usr/bin/groupchatd " "$stage/usr/lib/systemd/system/groupchatd.service"; then
    pass "installed unit runs /usr/bin/groupchatd"
else
    fail "installed unit runs /usr/bin/groupchatd"
fi

# A second install keeps the operator's configuration.
echo '# edited by the operator' >>"$stage/etc/groupchatd/groupchatd.toml"
if out=$(DESTDIR=$stage PREFIX=/usr BUILD_DIR=$bin_dir sh "$here/install.sh" 2>&1) \
    && grep -q '^# edited by the operator$' "$stage/etc/groupchatd/groupchatd.toml"; then
    pass "install.sh again keeps an existing configuration file"
else
    fail "install.sh again keeps an existing configuration file" "$out"
fi

# PREFIX=/usr/local points the units at /usr/local/bin and puts them under /etc.
local_stage=$tmp/stage-local
if out=$(DESTDIR=$local_stage BUILD_DIR=$bin_dir sh "$here/install.sh" 2>&1) \
    && grep -q '^ExecStart=/usr/local/bin/groupchatd ' "$local_stage/etc/systemd/system/groupchatd.service" \
    && grep -q '^ExecReload=/usr/local/bin/chatctl ' "$local_stage/etc/systemd/system/groupchatd.service" \
    && [ -x "$local_stage/usr/local/bin/chatctl" ] \
    && [ -s "$local_stage/etc/sysusers.d/groupchatd.conf" ]; then
    pass "install.sh with the default PREFIX=/usr/local"
else
    fail "install.sh with the default PREFIX=/usr/local" "$out"
fi

echo
echo "check-units: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
