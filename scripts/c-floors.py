#!/usr/bin/env python3
"""c-floors.py: which engine C file calls which (src/Native/c), and any loop among them.
Usage: scripts/c-floors.py [dir]. Exits 1 if the files' calls form a loop, so CI keeps the floors."""
import os, re, sys
from itertools import chain

d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src", "Native", "c")
files = sorted(f for f in os.listdir(d) if f.endswith(".c"))
src = {}
for f in files:
    s = open(os.path.join(d, f)).read()
    s = re.sub(r"/\*.*?\*/", "", s, flags=re.S)
    s = re.sub(r"//[^\n]*", "", s)
    s = re.sub(r'"(\\.|[^"\\])*"', '""', s)
    src[f] = s
# Functions defined at file scope (a name followed by '(' at the start of a definition line, then '{').
defs = {}
for f, s in src.items():
    for m in re.finditer(r"^(?!static)[A-Za-z_][\w \*]*?\b([a-z_][a-z0-9_]*)\s*\([^;{]*\)\s*\{", s, re.M):
        defs.setdefault(m.group(1), set()).add(f)
# The two OS files are alternatives: treat them as one floor named os.
def unit(f): return "os" if f in ("os_linux.c", "os_windows.c") else f
calls = {}
for f, s in src.items():
    for name in set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", s)):
        for g in defs.get(name, ()):
            if unit(g) != unit(f):
                calls.setdefault(unit(f), set()).add((unit(g), name))
units = sorted(set(unit(f) for f in files))
edges = {u: sorted(set(g for g, _ in calls.get(u, ()))) for u in units}
for u in units:
    print(f"{u:14} -> {', '.join(edges[u]) or '-'}")
# Loops: strongly connected components of more than one file.
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in units:
    if v not in index: visit(v)
for comp in sccs:
    print("LOOP:", " <-> ".join(comp))
    for u in comp:
        for g, name in sorted(calls.get(u, ())):
            if g in comp: print(f"   {u} calls {name} in {g}")
sys.exit(1 if sccs else 0)
