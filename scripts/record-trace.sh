#!/usr/bin/env bash
# Records a real program's memory references under Valgrind's lackey tool and writes them as a page-epoch
# trace (docs/traces.md), streamed through a pipe: the lackey text (GBs for a second of a real program) never
# lands on disk unless --keep-lackey asks for it.
#
#   scripts/record-trace.sh [--window N] [--data-only] [--keep-lackey FILE] OUT.pet -- PROGRAM [ARGS...]
#
# The program runs in the current directory with its own stdin/stdout/stderr. Needs valgrind (Debian:
# apt-get install valgrind). PAGELAB names the pagelab command (default: the built Release or Debug
# pagelab.dll under src/Cli/bin, else `dotnet run --project src/Cli -c Release --`).
set -euo pipefail

window=100000
data_only=()
keep=""
usage() { echo "usage: $0 [--window N] [--data-only] [--keep-lackey FILE] OUT.pet -- PROGRAM [ARGS...]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --window) [[ $# -ge 2 ]] || usage; window="$2"; shift 2 ;;
    --data-only) data_only=(--data-only); shift ;;
    --keep-lackey) [[ $# -ge 2 ]] || usage; keep="$2"; shift 2 ;;
    --) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ $# -ge 3 && "$2" == "--" ]] || usage
out="$1"
shift 2

command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (Debian: apt-get install -y valgrind)" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${PAGELAB:-}" ]]; then
  read -r -a pagelab <<<"$PAGELAB"
else
  pagelab=()
  for c in Release Debug; do
    dll="$repo/src/Cli/bin/$c/net10.0/pagelab.dll"
    if [[ -f "$dll" ]]; then pagelab=(dotnet "$dll"); break; fi
  done
  [[ ${#pagelab[@]} -gt 0 ]] || pagelab=(dotnet run --project "$repo/src/Cli" -c Release --)
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fifo="$tmp/lackey"
mkfifo "$fifo"

# The converter reads the pipe while Valgrind writes it (optionally copying the text aside).
if [[ -n "$keep" ]]; then
  tee "$keep" <"$fifo" | "${pagelab[@]}" trace convert - "$out" --window "$window" "${data_only[@]}" &
else
  "${pagelab[@]}" trace convert "$fifo" "$out" --window "$window" "${data_only[@]}" &
fi
converter=$!

set +e
valgrind --tool=lackey --trace-mem=yes --log-fd=3 "$@" 3>"$fifo"
program=$?
wait "$converter"
converted=$?
set -e
[[ $converted -eq 0 ]] || { echo "$0: the conversion failed (exit $converted)" >&2; exit 1; }
echo "$0: $* exited with $program under valgrind; trace written to $out" >&2
