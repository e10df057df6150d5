#!/usr/bin/env bash
# Re-records the example traces of this directory (see README.md): each program runs under Valgrind's lackey
# tool through scripts/record-trace.sh. Valgrind makes them 50-200x slower: a few minutes in all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rec="$here/../../scripts/record-trace.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# sort: 3,000 numbers (the same every time: shuf's random source is a stream of 'y' lines), sorted numerically.
shuf -i 1-1000000 -n 3000 --random-source=<(yes) > numbers.txt
"$rec" --window 10000 "$here/sort.pet" -- sort -n -o sorted.txt numbers.txt

# python3: builds a dict of 20,000 ints to strings (-S: no site packages, -I: isolated from the environment).
"$rec" --window 10000 "$here/python-dict.pet" -- /usr/bin/python3 -S -I -c 'd = {i: str(i) for i in range(20000)}; print(len(d))'

# sqlite3: an in-memory database, 2,000 rows, an index, a grouped query and a join.
"$rec" --window 10000 "$here/sqlite.pet" -- sqlite3 :memory: \
  'create table t(id integer primary key, k integer, v text);' \
  'with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000) insert into t select i, i % 97, hex(randomblob(16)) from n;' \
  'create index tk on t(k);' \
  'select k, count(*), max(v) from t group by k order by 2 desc limit 3;' \
  'select count(*) from t a join t b on a.k = b.k where a.id < 50;'

# tiny.lackey: the lackey text itself of a program with no C library (tiny.c), for the lackey reader's tests.
cc -O1 -static -nostdlib -fno-stack-protector -o tiny "$here/tiny.c"
valgrind --tool=lackey --trace-mem=yes --log-file="$here/tiny.lackey" ./tiny
