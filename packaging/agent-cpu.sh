#!/usr/bin/env bash
# CPU the agent spends per event: it reads a queue_log of ~1 M events
# (time-shifted copies of run-a) into its durable spool, with no aggregator
# reachable, and is timed from start until it has read the whole file. Used
# to weigh opt-level against size (BENCHMARKS.md "Appliance builds").
#
#   packaging/agent-cpu.sh AGENT_BINARY [RUNNER...]
#   e.g. packaging/agent-cpu.sh target/x86_64-unknown-linux-gnu/dist/callkpi-agent
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

agent=$(realpath "$1")
shift
COPIES=${COPIES:-5700}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/callkpi-agent-cpu.XXXXXX")
trap 'kill_started; rm -rf "$WORK"' EXIT

python3 - "$WORK/queue_log" "$COPIES" <<'EOF'
import sys
out, copies = sys.argv[1], int(sys.argv[2])
lines = open("tests/fixtures/asterisk/run-a/queue_log").read().splitlines()
epochs = [int(l.split("|")[0]) for l in lines]
span = max(epochs) - min(epochs) + 60
with open(out, "w") as f:
    for k in range(copies):
        for l in lines:
            e, call, rest = l.split("|", 2)
            a, dot, b = call.partition(".")
            if dot and a.isdigit():
                call = f"{int(a) + k * span}.{b}"
            f.write(f"{int(e) + k * span}|{call}|{rest}\n")
EOF
size=$(stat -c %s "$WORK/queue_log")
free_port port
free_port dead # nothing listens there: events stay spooled
cat >"$WORK/agent.toml" <<EOF
agent_id = "cpu"
site = "paris"
[uplink]
url = "http://127.0.0.1:$dead"
backoff_initial_ms = 60000
[spool]
path = "$WORK/spool"
max_bytes = 2147483648
[metrics]
listen = "127.0.0.1:$port"
[[sources.queue_log]]
name = "ql"
path = "$WORK/queue_log"
EOF

start=$(date +%s%N)
"$@" "$agent" run --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
pid=$!
STARTED_PIDS+=("$pid")
read_all() {
    local b
    b=$(metric "$port" 'callkpi_source_read_bytes_total{source="ql"}')
    [ -n "$b" ] && [ "${b%.*}" -ge "$size" ] && [ -n "$(metric "$port" callkpi_spool_last_seq)" ] &&
        [ "$(metric "$port" callkpi_spool_depth_events)" = "$(metric "$port" callkpi_spool_last_seq)" ]
}
eventually 600 read_all || fail "the agent did not read the file: $(tail "$WORK/agent.log")"
end=$(date +%s%N)
# utime + stime, in clock ticks (fields 14 and 15 of /proc/PID/stat).
ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
events=$(metric "$port" callkpi_spool_last_seq)
awk -v e="${events%.*}" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v ns=$((end - start)) -v mb="$size" 'BEGIN {
    printf "%d events (%.1f MB): %.1f s wall, %.2f s CPU, %.2f us CPU/event, %.0f events/s\n",
        e, mb / 1e6, ns / 1e9, t / hz, t / hz / e * 1e6, e / (ns / 1e9) }'
terminate "$pid" 30
