#!/bin/sh
# Repacks a .deb under a higher version, same files and maintainer scripts: the "version N+1" that
# e2e.sh --upgrade-to installs over version N. Cheaper than a second release build, and the
# upgrade path is the same: dpkg replaces every file and runs the new package's postinst.
#
#   tests/systemd/next-deb.sh FILE.deb OUTDIR     (prints the new package's path)
#
# VERSION becomes VERSION+upgrade1, which dpkg orders after VERSION.
set -eu

in=$(realpath "${1:?usage: next-deb.sh FILE.deb OUTDIR}")
outdir=${2:?usage: next-deb.sh FILE.deb OUTDIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

version=$(dpkg-deb -f "$in" Version)
next=$version+upgrade1
dpkg-deb --raw-extract "$in" "$work/pkg"
sed -i "s/^Version: .*/Version: $next/" "$work/pkg/DEBIAN/control"
mkdir -p "$outdir"
out=$outdir/$(dpkg-deb -f "$in" Package)_${next}_$(dpkg-deb -f "$in" Architecture).deb
dpkg-deb --root-owner-group -Zgzip --build "$work/pkg" "$out" >/dev/null
dpkg --compare-versions "$next" gt "$version"
echo "$out"
