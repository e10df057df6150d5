#!/usr/bin/env bash
# The Windows test lane: publishes the test suite self-contained for win-x64 (with the fault engine
# built as pagelab.dll by mingw-w64) and runs it under Wine 10 in a Debian 13 chroot.
#
# Wine is not Windows, but it is the closest thing that runs here: Debian 12's Wine 8 rejects
# placeholders (VirtualAlloc2 / MapViewOfFile3), Debian 13's Wine 10 runs them. The chroot is made once
# with debootstrap from the mirror this machine's apt already uses and is cached in $PAGELAB_CACHE.
#
# Usage: scripts/test-windows.sh [--setup-only | --timing] [-- extra arguments for the xunit test exe]
#   --setup-only  only make the chroot and the Wine prefix
#   --timing      run the timing program (scripts/timing: remap and fault round trips) instead of the tests
#   PAGELAB_CACHE     cache directory (default /var/cache/pagelab): the chroot and its Wine prefix
#   PAGELAB_WINE_TIMEOUT  seconds the test exe may run under Wine (default 900; about 5 min on an idle 2-vCPU machine, 10 beside a heavy build)
# Exit status: 0 when every Windows test passed, non-zero otherwise. Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${PAGELAB_CACHE:-/var/cache/pagelab}
ROOT=$CACHE/trixie
WINE_TIMEOUT=${PAGELAB_WINE_TIMEOUT:-900}
PUBLISH=$CACHE/publish/win-x64
SETUP_ONLY=0
TIMING=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --setup-only) SETUP_ONLY=1 ;;
    --timing) TIMING=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
t0=$SECONDS
lap() { echo "--- $1: $((SECONDS - t0)) s"; t0=$SECONDS; }

# 1. Host packages: debootstrap for the chroot, mingw-w64 for pagelab.dll.
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
lap "host packages"

# 2. The Debian 13 chroot with Wine, from the mirror this machine's apt is configured with.
mirror() {
  local uri=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    # The first URIs line of a stanza that is not the security archive.
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2; exit 1; }
  echo "$uri"
}

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do as_root umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind <source> <target inside chroot>
  as_root mkdir -p "$ROOT$2"
  if ! mountpoint -q "$ROOT$2"; then as_root mount --bind "$1" "$ROOT$2"; mounted+=("$ROOT$2"); fi
}

if [ ! -e "$ROOT/.pagelab-ready" ]; then
  MIRROR=$(mirror)
  echo "creating the Debian 13 (trixie) chroot in $ROOT from $MIRROR"
  as_root rm -rf "$ROOT"
  as_root mkdir -p "$CACHE"
  as_root timeout 900 debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
  bind /proc /proc
  bind /dev /dev
  bind /sys /sys
  as_root timeout 900 chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends wine wine64 ca-certificates
  as_root touch "$ROOT/.pagelab-ready"
fi
bind /proc /proc
bind /dev /dev
bind /sys /sys
echo "chroot: $(as_root chroot "$ROOT" /usr/bin/env WINEDEBUG=-all wine --version 2>/dev/null || echo 'wine missing')"
lap "chroot"

# 3. A Wine prefix inside the chroot, made once (wineboot) and reused.
PREFIX=/root/wineprefix
if [ ! -e "$ROOT$PREFIX/.pagelab-ready" ]; then
  as_root rm -rf "$ROOT$PREFIX"
  as_root timeout 300 chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX WINEDEBUG=-all HOME=/root \
    wineboot --init >/dev/null 2>&1 || true
  as_root timeout 60 chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX HOME=/root wineserver -w || true
  [ -e "$ROOT$PREFIX/system.reg" ] || { echo "wineboot did not create the Wine prefix" >&2; exit 1; }
  # A crash must end the run, not wait in winedbg.
  as_root timeout 60 chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX WINEDEBUG=-all HOME=/root \
    wine reg delete 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' /v Debugger /f >/dev/null 2>&1 || true
  as_root timeout 60 chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX HOME=/root wineserver -w || true
  as_root touch "$ROOT$PREFIX/.pagelab-ready"
fi
lap "wine prefix"
[ "$SETUP_ONLY" = 1 ] && exit 0

if [ "$TIMING" = 1 ]; then
  TIMING_OUT=$CACHE/publish/timing-win-x64
  rm -rf "$TIMING_OUT"
  timeout 900 dotnet publish scripts/timing -c Release -r win-x64 --self-contained \
    --artifacts-path "$CACHE/artifacts" -o "$TIMING_OUT" -v quiet -nologo
  bind "$TIMING_OUT" /pagelab-timing
  as_root timeout "$WINE_TIMEOUT" chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX WINEDEBUG=-all HOME=/root \
    XDG_RUNTIME_DIR=/root sh -c "cd /pagelab-timing && wine PageLab.Timing.exe ${EXTRA[*]:-}"
  exit $?
fi

# 4. Publish the test suite for win-x64, self-contained (pagelab.dll comes from mingw-w64).
# Built under $CACHE/artifacts (not the repo's obj/), so it neither disturbs nor waits for the Linux build.
rm -rf "$PUBLISH"
timeout 900 dotnet publish tests/PageLab.Tests -c Release -r win-x64 --self-contained \
  --artifacts-path "$CACHE/artifacts" -o "$PUBLISH" -v quiet -nologo
[ -e "$PUBLISH/libpagelab.dll" ] || { echo "publish produced no libpagelab.dll (the fault engine for Windows)" >&2; exit 1; }
lap "publish"

# 5. Run it under Wine. The publish dir is bind-mounted into the chroot as C:-reachable /pagelab.
bind "$PUBLISH" /pagelab
REPORT=/pagelab/results
set +e
as_root timeout "$WINE_TIMEOUT" chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX WINEDEBUG=-all HOME=/root \
  XDG_RUNTIME_DIR=/root DOTNET_CLI_TELEMETRY_OPTOUT=1 \
  sh -c "cd /pagelab && wine PageLab.Tests.exe -noColor -noLogo -result-xml $REPORT.xml ${EXTRA[*]:-}"
rc=$?
set -e
as_root timeout 60 chroot "$ROOT" /usr/bin/env WINEPREFIX=$PREFIX HOME=/root wineserver -k 2>/dev/null || true
lap "tests under Wine"

# 6. Counts from the xunit XML report (printed even when the run failed part way).
if [ -s "$PUBLISH/results.xml" ]; then
  counts=$(grep -o '<assembly [^>]*>' "$PUBLISH/results.xml" | head -1)
  field() { echo "$counts" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  echo "Windows lane (Wine $(as_root chroot "$ROOT" /usr/bin/env WINEDEBUG=-all wine --version 2>/dev/null)): total $(field total), passed $(field passed), failed $(field failed), skipped $(field skipped)"
  [ "$(field failed)" = 0 ] || rc=${rc/#0/1}
else
  echo "Windows lane: no test report (the test exe exited with $rc before writing one)"
  [ "$rc" != 0 ] || rc=1
fi
[ "$rc" = 124 ] && echo "Windows lane: timed out after $WINE_TIMEOUT s" >&2
exit "$rc"
