#!/usr/bin/env bash
# Smoke test on emulated ARM: the aarch64 callkpi-agent, run by Debian's
# qemu-user-static, tails a growing queue_log and delivers it to a native
# x86_64 aggregator on 127.0.0.1. Passes when the aggregator holds every
# event the agent spooled, the agent's spool is empty, and `callkpi report`
# (from the aggregator) prints the same rows as `callkpi analyze` of the same
# file offline. Also starts every other cross-built binary once (armhf
# agent validate, --version of the rest).
#
# Needs packaging/build.sh to have run (x86_64 and aarch64 at least).
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

ensure_apt qemu-user-static libc6-arm64-cross libc6-armhf-cross python3

AGENT_ARM64=$(bin_path aarch64-unknown-linux-gnu callkpi-agent)
AGG=$(bin_path x86_64-unknown-linux-gnu callkpi-aggregator)
CLI=$(bin_path x86_64-unknown-linux-gnu callkpi)
for b in "$AGENT_ARM64" "$AGG" "$CLI"; do [ -x "$b" ] || fail "$b missing: run packaging/build.sh"; done
readelf -h "$AGENT_ARM64" | grep -q 'Machine:.*AArch64' || fail "$AGENT_ARM64 is not an AArch64 binary"
# The emulator and the target's loader and libc (Debian's cross packages).
QEMU_ARM64=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)
QEMU_ARMHF=(qemu-arm-static -L /usr/arm-linux-gnueabihf)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/callkpi-smoke-arm.XXXXXX")
trap 'kill_started; rm -rf "$WORK"' EXIT

free_port grpc
free_port agg_http
free_port agent_http
agent_token=arm-smoke-token-0123456789
reader_token=arm-smoke-reader-9876543210

cat >"$WORK/aggregator.toml" <<EOF
listen = "127.0.0.1:$grpc"
metrics_listen = "127.0.0.1:$agg_http"
store_path = "$WORK/store"
store_cache_bytes = 8388608
heartbeat_interval_ms = 1000

[[agents]]
id = "arm-smoke"
site = "paris"
token_sha256 = "$(printf %s "$agent_token" | "$AGG" hash-token)"

[[readers]]
name = "ci"
token_sha256 = "$(printf %s "$reader_token" | "$AGG" hash-token)"
EOF

cat >"$WORK/agent.toml" <<EOF
agent_id = "arm-smoke"
site = "paris"

[uplink]
url = "http://127.0.0.1:$grpc"
token = "$agent_token"
backoff_initial_ms = 50
backoff_max_ms = 500
heartbeat_interval_ms = 1000
connect_timeout_ms = 2000

[spool]
path = "$WORK/spool"

[metrics]
listen = "127.0.0.1:$agent_http"

[[sources.queue_log]]
name = "ql"
path = "$WORK/queue_log"
poll_interval_ms = 50
EOF

check_binaries() {
    "${QEMU_ARM64[@]}" "$AGENT_ARM64" validate --config "$WORK/agent.toml"
    local code=0
    printf 'agent_id = "x"\nbogus = 1\n' >"$WORK/bad.toml"
    "${QEMU_ARM64[@]}" "$AGENT_ARM64" validate --config "$WORK/bad.toml" 2>/dev/null || code=$?
    [ "$code" -eq 64 ] || fail "aarch64 agent: a bad config gave exit $code, not 64"
    "${QEMU_ARMHF[@]}" "$(bin_path armv7-unknown-linux-gnueabihf callkpi-agent)" validate --config "$WORK/agent.toml"
    local t b
    for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
        for b in callkpi-aggregator callkpi; do
            if [ "$t" = aarch64-unknown-linux-gnu ]; then
                "${QEMU_ARM64[@]}" "$(bin_path "$t" "$b")" --version
            else
                "${QEMU_ARMHF[@]}" "$(bin_path "$t" "$b")" --version
            fi
        done
    done
}

healthy() { http_get "$agg_http" /healthz >/dev/null; }
agent_up() { http_get "$agent_http" /metrics >/dev/null; }

start_both() {
    "$AGG" run --config "$WORK/aggregator.toml" >"$WORK/aggregator.log" 2>&1 &
    STARTED_PIDS+=($!)
    AGG_PID=$!
    eventually 30 healthy || fail "aggregator did not come up: $(tail -20 "$WORK/aggregator.log")"
    : >"$WORK/queue_log"
    CALLKPI_LOG=info "${QEMU_ARM64[@]}" "$AGENT_ARM64" run --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
    STARTED_PIDS+=($!)
    AGENT_PID=$!
    eventually 60 agent_up || fail "aarch64 agent did not come up: $(tail -20 "$WORK/agent.log")"
}

# Appends the recording 8 lines at a time, 10 times a second.
grow_queue_log() {
    local fixture=tests/fixtures/asterisk/run-a/queue_log n i
    n=$(wc -l <"$fixture")
    for ((i = 1; i <= n; i += 8)); do
        sed -n "${i},$((i + 7))p" "$fixture" >>"$WORK/queue_log"
        sleep 0.1
    done
    cmp -s "$fixture" "$WORK/queue_log" || fail "queue_log copy differs from the fixture"
}

# Every spooled event acked: the aggregator's hwm equals the agent's last
# seq, nothing left in the spool, and the agent has stopped reading.
delivered() {
    local last hwm depth
    last=$(metric "$agent_http" callkpi_spool_last_seq) || return 1
    depth=$(metric "$agent_http" callkpi_spool_depth_events) || return 1
    hwm=$(metric "$agg_http" 'callkpi_agent_hwm{agent="arm-smoke"}') || return 1
    [ -n "$last" ] && [ -n "$depth" ] && [ -n "$hwm" ] || return 1
    [ "${last%.*}" -gt 0 ] && [ "${hwm%.*}" = "${last%.*}" ] && [ "${depth%.*}" -eq 0 ] || return 1
    sleep 1
    [ "$(metric "$agent_http" callkpi_spool_last_seq)" = "$last" ] || return 1
    DELIVERED=${last%.*}
}

compare_reports() {
    # Let a heartbeat tell the aggregator the agent's spool is delivered.
    sleep 2.5
    # The whole recording: `report` alone would cover only today.
    local opts=(--by queue --interval 15m --tz Europe/Paris --format json --from 1970-01-01T00:00:00Z)
    "$CLI" analyze --queue-log "$WORK/queue_log" --site paris "${opts[@]}" >"$WORK/offline.json"
    "$CLI" report --server "http://127.0.0.1:$grpc" --token "$reader_token" "${opts[@]}" >"$WORK/live.json"
    python3 - "$WORK/offline.json" "$WORK/live.json" <<'EOF'
import json, sys

def rows(path):
    rows = json.load(open(path))["rows"]
    # Whether the FCR window has closed depends on "now" (see tests/tests/reports.rs).
    for r in rows:
        r["flags"] = [f for f in r.get("flags", []) if f != "fcr_provisional"]
    return rows

offline, live = rows(sys.argv[1]), rows(sys.argv[2])
assert offline, "analyze printed no rows"
assert offline == live, f"report differs from analyze:\n{offline}\n---\n{live}"
print(f"callkpi report == callkpi analyze: {len(offline)} rows")
EOF
}

stop_both() {
    terminate "$AGENT_PID" 30
    [ "$EXIT_CODE" = 0 ] || fail "aarch64 agent: SIGTERM gave exit $EXIT_CODE: $(tail -20 "$WORK/agent.log")"
    terminate "$AGG_PID" 30
    [ "$EXIT_CODE" = 0 ] || fail "aggregator: SIGTERM gave exit $EXIT_CODE: $(tail -20 "$WORK/aggregator.log")"
}

step "arm: every cross binary starts under qemu" check_binaries
step "arm: aggregator (x86_64) + agent (aarch64, qemu)" start_both
step "arm: queue_log grows (run-a, 176 lines)" grow_queue_log
step "arm: events delivered and acked" eventually 120 delivered
log "aarch64 agent delivered $DELIVERED events"
step "arm: report from the aggregator == analyze" compare_reports
step "arm: both stop cleanly on SIGTERM" stop_both
print_timings
