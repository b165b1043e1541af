#!/usr/bin/env bash
# Figures for BENCHMARKS.md "Appliance builds": stripped binary size per
# target, package sizes, and the agent's RSS idle and at ~1 000 queue_log
# events/s: aarch64 under qemu-user (with the emulator's own RSS measured
# apart) and native x86_64 as the reference, each delivering to a native
# aggregator on 127.0.0.1. About 2 min; needs packaging/build.sh first.
#
#   packaging/figures.sh [IDLE_SECS FEED_SECS]      (default 10 30)
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

IDLE_SECS=${1:-10}
FEED_SECS=${2:-30}
RATE=1000
ensure_apt qemu-user-static gcc-aarch64-linux-gnu

WORK=$(mktemp -d "${TMPDIR:-/tmp}/callkpi-figures.XXXXXX")
trap 'kill_started; rm -rf "$WORK"' EXIT

sizes() {
    local t b
    printf '| target | callkpi-agent | callkpi-aggregator | callkpi |\n|---|---|---|---|\n'
    for t in "${ALL_TARGETS[@]}"; do
        printf '| %s |' "$t"
        for b in callkpi-agent callkpi-aggregator callkpi; do
            printf ' %s |' "$(numfmt --to=iec-i --suffix=B --format=%.2f "$(stat -c %s "$(bin_path "$t" "$b")")")"
        done
        printf '\n'
    done
}

packages() {
    local f
    printf '| package | .deb | installed |\n|---|---|---|\n'
    for f in "$DEB_DIR"/*.deb; do
        printf '| %s | %s | %s |\n' "$(basename "$f")" \
            "$(numfmt --to=iec-i --suffix=B --format=%.2f "$(stat -c %s "$f")")" \
            "$(numfmt --to=iec-i --suffix=B --format=%.2f $(($(dpkg-deb -f "$f" Installed-Size) * 1024)))"
    done
}

# sample PID SECS OUT: VmRSS and VmHWM (KiB) every 250 ms.
sample() {
    local pid=$1 secs=$2 out=$3 i
    : >"$out"
    for ((i = 0; i < secs * 4; i++)); do
        awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { if (r) print r, h }' "/proc/$pid/status" >>"$out" 2>/dev/null || true
        sleep 0.25
    done
}
# summary FILE: "median / max VmRSS, VmHWM" in MiB.
summary() {
    sort -n "$1" | awk '{ r[NR] = $1; if ($1 > m) m = $1; if ($2 > h) h = $2 }
        END { printf "%.1f / %.1f MiB, HWM %.1f MiB", r[int((NR + 1) / 2)] / 1024, m / 1024, h / 1024 }'
}

# Appends time-shifted copies of run-a (as tests/benches/common does) at
# RATE events/s for SECS, given the events one line maps to on average.
feed() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF'
import sys, time
out, epl, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lines = open("tests/fixtures/asterisk/run-a/queue_log").read().splitlines()
epochs = [int(l.split("|")[0]) for l in lines]
span = max(epochs) - min(epochs) + 60

def copy(k):
    for l in lines:
        e, call, rest = l.split("|", 2)
        a, dot, b = call.partition(".")
        if dot and a.isdigit():
            call = f"{int(a) + k * span}.{b}"
        yield f"{int(e) + k * span}|{call}|{rest}\n"

def gen():
    k = 1000  # after any copy the agent saw before
    while True:
        yield from copy(k)
        k += 1

g = gen()
start, written, tick = time.monotonic(), 0, 0
with open(out, "a") as f:
    while time.monotonic() - start < secs:
        tick += 1
        due = round(tick * rate / 10 / epl)
        f.write("".join(next(g) for _ in range(due - written)))
        f.flush()
        written = due
        time.sleep(max(0.0, start + tick / 10 - time.monotonic()))
EOF
}

free_port grpc
free_port agg_http
AGG=$(bin_path x86_64-unknown-linux-gnu callkpi-aggregator)
# One token per agent (the aggregator refuses a token shared by two).
token() { echo "figures-token-$1-0123456789"; }
cat >"$WORK/aggregator.toml" <<EOF
listen = "127.0.0.1:$grpc"
metrics_listen = "127.0.0.1:$agg_http"
store_path = "$WORK/store"
store_cache_bytes = 8388608
[[agents]]
id = "fig-x86_64"
token_sha256 = "$(token x86_64 | tr -d '\n' | "$AGG" hash-token)"
[[agents]]
id = "fig-aarch64"
token_sha256 = "$(token aarch64 | tr -d '\n' | "$AGG" hash-token)"
EOF

# rss NAME CMD...: the agent (CMD + run --config) idle, then fed.
rss() {
    local name=$1 port dir last0 last1 epl
    shift
    free_port port
    dir=$WORK/$name
    mkdir -p "$dir"
    cp tests/fixtures/asterisk/run-a/queue_log "$dir/queue_log"
    cat >"$dir/agent.toml" <<EOF
agent_id = "fig-$name"
site = "paris"
[uplink]
url = "http://127.0.0.1:$grpc"
token = "$(token "$name")"
[spool]
path = "$dir/spool"
[metrics]
listen = "127.0.0.1:$port"
[[sources.queue_log]]
name = "ql"
path = "$dir/queue_log"
EOF
    "$@" run --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 &
    STARTED_PIDS+=($!)
    local pid=$!
    # One copy of run-a read and delivered: its events per line.
    agent_read() {
        local l h
        l=$(metric "$port" callkpi_spool_last_seq) && h=$(metric "$agg_http" "callkpi_agent_hwm{agent=\"fig-$name\"}") &&
            [ -n "$l" ] && [ "${l%.*}" -gt 0 ] && [ "${h%.*}" = "${l%.*}" ]
    }
    eventually 60 agent_read || fail "$name agent did not deliver run-a: $(tail "$dir/agent.log")"
    epl=$(awk -v e="$(metric "$port" callkpi_spool_last_seq)" -v n="$(wc -l <"$dir/queue_log")" 'BEGIN { print e / n }')
    sleep 2
    sample "$pid" "$IDLE_SECS" "$dir/idle"
    last0=$(metric "$port" callkpi_spool_last_seq)
    feed "$dir/queue_log" "$epl" "$RATE" "$FEED_SECS" &
    local feeder=$!
    STARTED_PIDS+=("$feeder")
    sample "$pid" "$FEED_SECS" "$dir/fed"
    wait "$feeder"
    forget_pid "$feeder"
    # Let the agent read and spool the last lines.
    sleep 1
    last1=$(metric "$port" callkpi_spool_last_seq)
    printf '| %s | %s | %s (%s events/s) |\n' "$name" "$(summary "$dir/idle")" "$(summary "$dir/fed")" \
        "$(awk -v a="$last0" -v b="$last1" -v s="$FEED_SECS" 'BEGIN { printf "%.0f", (b - a) / s }')"
    terminate "$pid" 30
}

# qemu-aarch64 running a program that only waits: the emulator's own share.
qemu_baseline() {
    printf '#include <unistd.h>\nint main(void) { pause(); return 0; }\n' >"$WORK/pause.c"
    aarch64-linux-gnu-gcc -O2 -o "$WORK/pause" "$WORK/pause.c"
    qemu-aarch64-static -L /usr/aarch64-linux-gnu "$WORK/pause" &
    STARTED_PIDS+=($!)
    sleep 1
    sample $! 3 "$WORK/pause.rss"
    printf '| qemu-aarch64 running pause() (emulator alone) | %s | - |\n' "$(summary "$WORK/pause.rss")"
    terminate $! 5
}

log "stripped binaries (profile $PROFILE)"
sizes
log "packages (xz)"
packages
log "agent RSS: idle ${IDLE_SECS} s, then ${RATE} events/s for ${FEED_SECS} s (median / max VmRSS, VmHWM)"
"$AGG" run --config "$WORK/aggregator.toml" >"$WORK/aggregator.log" 2>&1 &
STARTED_PIDS+=($!)
AGG_PID=$!
eventually 30 http_get "$agg_http" /healthz >/dev/null || fail "aggregator did not come up"
printf '| agent | idle | at %s events/s |\n|---|---|---|\n' "$RATE"
rss x86_64 "$(bin_path x86_64-unknown-linux-gnu callkpi-agent)"
rss aarch64 qemu-aarch64-static -L /usr/aarch64-linux-gnu "$(bin_path aarch64-unknown-linux-gnu callkpi-agent)"
qemu_baseline
terminate "$AGG_PID" 30
