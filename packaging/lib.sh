# Shared by the packaging scripts (sourced, not run): targets, paths,
# installs, timing, loopback helpers and cleanup of the processes a script
# started. Every wait has a deadline.

# shellcheck shell=bash disable=SC2034

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Cargo's target dir (the same one serves every target triple).
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
# The cargo profile the packages are built with (root Cargo.toml).
PROFILE=dist
# Rust target triple -> Debian architecture.
declare -A DEB_ARCH=(
    [x86_64-unknown-linux-gnu]=amd64
    [aarch64-unknown-linux-gnu]=arm64
    [armv7-unknown-linux-gnueabihf]=armhf
)
ALL_TARGETS=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# Where the .deb files go.
DEB_DIR=$TARGET_DIR/debian
# cargo-deb release installed when missing (pinned: its output is what CI checks).
CARGO_DEB_VERSION=3.8.0

# A binary of the dist build.
bin_path() { echo "$TARGET_DIR/$1/$PROFILE/$2"; }

log() { printf '== %s\n' "$*"; }
fail() {
    printf '!! %s\n' "$*" >&2
    exit 1
}

# step NAME CMD...: runs CMD and prints its wall time; appends it to TIMINGS.
TIMINGS=()
step() {
    local name=$1 start end
    shift
    log "$name"
    start=$(date +%s%N)
    "$@"
    end=$(date +%s%N)
    TIMINGS+=("$(awk -v n="$name" -v ns=$((end - start)) 'BEGIN { printf "%-46s %7.1f s", n, ns / 1e9 }')")
}
print_timings() {
    log "wall time per step"
    printf '   %s\n' "${TIMINGS[@]}"
}

# Installs the Debian packages that are missing (one apt-get update per run).
ensure_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    if [ -z "${CALLKPI_APT_UPDATED:-}" ]; then
        apt-get update -qq
        export CALLKPI_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs the rustup targets that are missing.
ensure_rust_targets() {
    local installed t
    installed=$(rustup target list --installed)
    for t in "$@"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
}

# Installs cargo-deb $CARGO_DEB_VERSION unless that version is already there.
ensure_cargo_deb() {
    if cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
        return 0
    fi
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
}

# --- processes ----------------------------------------------------------

# Children this script started and has not reaped yet: until reaped, a PID
# cannot be reused, so killing these never hits another process.
STARTED_PIDS=()
forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}
# Kills (by PID) every process this script started and has not reaped.
kill_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# terminate PID SECONDS: SIGTERM, then waits up to SECONDS; sets EXIT_CODE
# to the exit code, or to "timeout" after a SIGKILL. (A variable, not output:
# in $(...) the subshell could not wait for this shell's child.)
EXIT_CODE=
terminate() {
    local pid=$1 patience=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < patience * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            EXIT_CODE=0
            wait "$pid" || EXIT_CODE=$?
            forget_pid "$pid"
            return 0
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    EXIT_CODE=timeout
}

# --- loopback -----------------------------------------------------------

# free_port VAR: sets VAR to a free port on 127.0.0.1 below the ephemeral
# range (see tests/src/lib.rs), never one this script was given before.
# (A variable, not output: $(free_port) would run in a subshell and forget.)
FREE_PORT_NEXT=$((21000 + ($$ % 500) * 20))
free_port() {
    local p
    for ((p = FREE_PORT_NEXT; p < FREE_PORT_NEXT + 2000; p++)); do
        if ! (exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$p"); then
            FREE_PORT_NEXT=$((p + 1))
            printf -v "$1" %s "$p"
            return 0
        fi
    done
    fail "no free loopback port"
}

# http_get PORT PATH: the body of a 200 answer, else nothing and status 1.
http_get() {
    local resp
    resp=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        timeout 5 cat <&3
    ) || return 1
    [[ $resp == "HTTP/1."?" 200"* ]] || return 1
    printf '%s\n' "${resp#*$'\r\n\r\n'}"
}

# metric PORT NAME{LABELS}: one sample's value from a Prometheus endpoint.
metric() {
    http_get "$1" /metrics | awk -v n="$2" 'index($0, n " ") == 1 { print $2; exit }'
}

# eventually SECONDS CMD...: runs CMD every 0.2 s until it succeeds, at most SECONDS.
eventually() {
    local patience=$1 i
    shift
    for ((i = 0; i < patience * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}
