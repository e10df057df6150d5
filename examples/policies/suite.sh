#!/usr/bin/env bash
# The policy suite: every built-in policy over every scenario of the suite, three seeds each (one
# `pagelab sweep` per scenario, runs resumed if done), then one table (table.md) and one plot (suite.svg) of
# each policy's guest paging and churn against esx's. docs/scheduler.md has the table.
#   examples/policies/suite.sh [OUT]      (default: artifacts/policy-suite; PAGELAB=... to use another build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$root/artifacts/policy-suite}" && cd "${1:-$root/artifacts/policy-suite}" && pwd)
policies='["static", "esx", "pagelab", "mrc"]'
seeds=3
jobs=${JOBS:-2}
if [[ -z "${PAGELAB:-}" ]]; then
  dotnet build "$root/src/Cli" -v q -nologo >/dev/null
  PAGELAB="dotnet $root/src/Cli/bin/Debug/net10.0/pagelab.dll"
fi

# The suite: the built-in scenario, the examples beside this folder (small enough to run in seconds) and
# the scenarios in it.
scenarios=(built-in "$root/examples/two-vms.json" "$root/examples/bounded-vms.json" "$root/examples/same-image.json"
           "$root/examples/free-page-reporting.json" "$here"/*.json)

for f in "${scenarios[@]}"; do
  name=$(basename "$f" .json)
  mkdir -p "$out/$name"
  scenario=""
  [[ "$f" != built-in ]] && scenario="\"scenario\": \"$f\", "
  echo "{ $scenario\"grid\": { \"policy\": $policies }, \"seeds\": $seeds }" > "$out/$name/sweep.json"
  echo "== $name"
  $PAGELAB sweep "$out/$name/sweep.json" --out "$out/$name" --no-plot -j "$jobs" | tail -1
done

# Means over seeds per scenario and policy: guest paging (page-outs + page-ins) and churn (frames taken
# from VMs per tick), from every sweep's CSV.
for f in "${scenarios[@]}"; do
  name=$(basename "$f" .json)
  awk -F, -v s="$name" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { p = $col["policy"]; paging[p] += $col["guestPaging"]; churn[p] += $col["framesMovedPerTick"]; n[p]++ }
    END { for (p in n) printf "%s %s %.1f %.2f\n", s, p, paging[p] / n[p], churn[p] / n[p] }' "$out/$name/sweep.csv"
done > "$out/means.txt"

awk -v seeds="$seeds" '
  { key = $1 SUBSEP $2; paging[key] = $3; churn[key] = $4; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
  END {
    print "| scenario | static | esx | pagelab | mrc | mrc / esx paging | esx churn | mrc churn | mrc / esx churn |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= n; i++) {
      s = order[i]; e = paging[s, "esx"]; m = paging[s, "mrc"]
      pr = 0; if (e > 0) pr = m / e
      cr = 0; if (churn[s, "esx"] > 0) cr = churn[s, "mrc"] / churn[s, "esx"]
      printf "| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |\n", s, paging[s, "static"], e, paging[s, "pagelab"], m, pr, churn[s, "esx"], churn[s, "mrc"], cr
      tot["static"] += paging[s, "static"]; tot["esx"] += e; tot["pagelab"] += paging[s, "pagelab"]; tot["mrc"] += m
    }
    printf "| **suite** | %.0f | %.0f | %.0f | %.0f | **%.2f** | | | |\n", tot["static"], tot["esx"], tot["pagelab"], tot["mrc"], tot["mrc"] / tot["esx"]
    printf "\nMeans over %d seeds of guest paging (page-outs + page-ins) and churn (frames taken from VMs per tick).\n", seeds
  }' "$out/means.txt" > "$out/table.md"

# The plot: per scenario, mrc's and pagelab's guest paging and churn over esx's (1 = as esx), as bars.
awk '
  { key = $1 SUBSEP $2; paging[key] = $3; churn[key] = $4; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
  END {
    W = 60 + n * 90; H = 360; base = 300; scale = 120            # 1.0 = 120 px
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"10\">\n", W, H
    printf "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H
    printf "<text x=\"10\" y=\"16\" font-size=\"13\">over esx, per scenario (means over seeds): paging mrc (blue), pagelab (grey); churn mrc (orange)</text>\n"
    for (r = 0.5; r <= 2; r += 0.5) {
      stroke = "#ddd"; if (r == 1) stroke = "black"
      printf "<line x1=\"40\" x2=\"%d\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\"/><text x=\"8\" y=\"%.0f\">%.1f</text>\n", W - 10, base - r * scale, base - r * scale, stroke, base - r * scale + 3, r
    }
    for (i = 1; i <= n; i++) {
      s = order[i]; x = 50 + (i - 1) * 90; e = paging[s, "esx"]; c = churn[s, "esx"]
      pm = 0; pp = 0; cm = 0
      if (e > 0) { pm = paging[s, "mrc"] / e; pp = paging[s, "pagelab"] / e }
      if (c > 0) cm = churn[s, "mrc"] / c
      bar(x, pm, "#1f77b4"); bar(x + 22, pp, "#999"); bar(x + 44, cm, "#ff7f0e")
      printf "<text transform=\"translate(%d,%d) rotate(30)\">%s</text>\n", x, base + 12, s
    }
    print "</svg>"
  }
  function bar(x, v, color,  h) { h = (v > 2.4 ? 2.4 : v) * scale; printf "<rect x=\"%d\" y=\"%.0f\" width=\"20\" height=\"%.0f\" fill=\"%s\"/>\n", x, base - h, h, color }
' "$out/means.txt" > "$out/suite.svg"

cat "$out/table.md"
echo "table: $out/table.md   plot: $out/suite.svg   runs: $out/*/runs/"
