#!/bin/sh
# Plots the agent's memory over an outage from the backlog bench's samples:
#   BENCH_MEM_CSV=docs/agent-memory-1h.csv BENCH_FEED_SECS=3600 ... \
#     cargo bench -p callkpi-tests --bench backlog
#   docs/plot-agent-memory.sh docs/agent-memory-1h.csv docs/agent-memory-1h.png
# (the full command is in BENCHMARKS.md, "Agent memory over an hour-long
# outage"). matplotlib comes from PyPI into a venv made here, under
# target/ so that nothing of it is committed.
set -eu
csv=${1:?usage: plot-agent-memory.sh samples.csv out.png [title]}
png=${2:?usage: plot-agent-memory.sh samples.csv out.png [title]}
title=${3:-callkpi-agent memory, offline, 1 000 queue_log events/s}
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/plot-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'matplotlib>=3.7,<4'
fi
"$venv/bin/python" - "$csv" "$png" "$title" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

path, out, title = sys.argv[1:4]
t, rss, anon, file_ = [], [], [], []
with open(path, newline="") as f:
    for row in csv.DictReader(f):
        t.append(float(row["secs"]) / 60.0)
        rss.append(int(row["vmrss_kib"]) / 1024.0)
        anon.append(int(row["rss_anon_kib"]) / 1024.0)
        file_.append(int(row["rss_file_kib"]) / 1024.0)
fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
ax.plot(t, rss, label="VmRSS", linewidth=1.2)
ax.plot(t, anon, label="RssAnon (heap, sled)", linewidth=1.0)
ax.plot(t, file_, label="RssFile (binary, libraries)", linewidth=1.0)
ax.axhline(24, color="grey", linestyle="--", linewidth=0.8, label="target 24 MiB")
ax.set_xlabel("minutes since the feed started (no aggregator reachable)")
ax.set_ylabel("MiB")
ax.set_ylim(bottom=0)
ax.set_title(title)
ax.grid(True, linewidth=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(out)
print(f"{out}: {len(t)} samples, VmRSS max {max(rss):.1f} MiB")
PY
