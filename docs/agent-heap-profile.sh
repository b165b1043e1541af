#!/bin/sh
# What holds the agent's heap during an outage: runs callkpi-agent under
# heaptrack (Debian package `heaptrack`) with an empty spool and no
# aggregator reachable, appends queue_log lines at about 1 000 events/s
# (copies of tests/fixtures/asterisk/run-a/queue_log, shifted in time) for
# SECS seconds, stops the agent with SIGTERM, and prints heaptrack's peak
# consumers. Evidence for BENCHMARKS.md, "Agent memory over an hour-long
# outage".
#   docs/agent-heap-profile.sh [agent binary, default target/release/callkpi-agent] [SECS, default 240]
# The release build keeps its symbols (the dist build is stripped).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
agent=${1:-$root/target/release/callkpi-agent}
secs=${2:-240}
command -v heaptrack >/dev/null || { echo "needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
work=$(mktemp -d "$root/target/tmp/heap-profile.XXXXXX")
: > "$work/queue_log"
cat > "$work/agent.toml" <<TOML
agent_id = "agent-heap"
site = "bench"
[uplink]
# Nothing listens here: the whole run is an outage.
url = "http://127.0.0.1:9"
token = "unused"
[spool]
path = "$work/spool"
[metrics]
listen = "disabled"
[[sources.queue_log]]
name = "ql"
path = "$work/queue_log"
TOML
heaptrack -o "$work/heaptrack" "$agent" run --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
tracked=$!
sleep 3
# 176 lines (about 170 events) per copy; about 6 copies a second.
fixture="$root/tests/fixtures/asterisk/run-a/queue_log"
copy=0
end=$(( $(date +%s) + secs ))
while [ "$(date +%s)" -lt "$end" ]; do
    for _ in 1 2 3; do
        copy=$((copy + 1))
        awk -F'|' -v OFS='|' -v k="$copy" '{
            shift = k * 100000
            if ($1 ~ /^[0-9]+$/) $1 = $1 + shift
            if ($2 ~ /^[0-9]+\.[0-9]+$/) { split($2, p, "."); $2 = (p[1] + shift) "." p[2] }
            print
        }' "$fixture" >> "$work/queue_log"
    done
    sleep 0.5
done
# heaptrack's script waits for the agent; signal the agent itself.
agent_pid=$(pgrep -P "$tracked" -f "$agent" | head -n 1 || true)
kill -TERM "${agent_pid:-$tracked}"
wait "$tracked" || true
data=$(ls "$work"/heaptrack.* | head -n 1)
echo "lines fed: $(wc -l < "$work/queue_log"); heaptrack data: $data"
heaptrack_print -f "$data" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 15 --sub-peak-limit 4 | head -n 160
