#!/usr/bin/env bash
# Installs the amd64 packages into a throwaway Debian 12 root (debootstrap
# minbase + systemd) and checks what an admin relies on:
# - with chroot: files, conffiles, the callkpi system user, ownership and
#   modes, the units (systemd-analyze verify, hardening keys), configs that
#   validate as the service user;
# - booted with systemd-nspawn (own network namespace, so the default ports
#   are free): both units enabled and started under their real sandbox, a
#   queue_log delivered from agent to aggregator, the sandbox in force in
#   /proc, an upgrade of the running agent that keeps its spool and a local
#   config edit, a bad config stopping the unit after a bounded number of tries;
# - with chroot again: remove keeps spool and config, purge deletes them.
#
# Needs packaging/build.sh to have run for x86_64. CALLKPI_CHROOT: an
# existing debootstrapped directory to use instead (it is modified).
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

ensure_apt debootstrap systemd systemd-container python3

version=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "callkpi-agent"))')
deb() { echo "$DEB_DIR/${1}_${version}-1_amd64.deb"; }
for p in callkpi-agent callkpi-aggregator callkpi-cli; do
    [ -f "$(deb "$p")" ] || fail "$(deb "$p") missing: run packaging/build.sh"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/callkpi-smoke-deb.XXXXXX")
ROOT=${CALLKPI_CHROOT:-$WORK/root}
NSPAWN_PID=
LEADER=
trap 'stop_container; rm -rf "$WORK"' EXIT

in_root() { chroot "$ROOT" "$@"; }
# check DESCRIPTION CMD...: CMD must succeed.
check() {
    local what=$1
    shift
    "$@" || fail "deb: $what"
    printf '   ok  %s\n' "$what"
}
# Names as the root's own /etc/passwd and /etc/group give them.
mode_owner() { [ "$(in_root stat -c '%a %U %G' "$1" 2>/dev/null)" = "$2" ]; }
absent() { [ ! -e "$ROOT$1" ]; }
# The shipped agent config has no token (each office gets its own): as user
# callkpi, validate exits 64 and says which key to fill in.
shipped_agent_config_refused() {
    local out code=0
    out=$(in_root setpriv --reuid=callkpi --regid=callkpi --init-groups \
        /usr/bin/callkpi-agent validate --config /etc/callkpi/agent.toml 2>&1) || code=$?
    [ "$code" -eq 64 ] && grep -q 'uplink.token' <<<"$out" || { echo "exit $code: $out" >&2; return 1; }
}
present() { [ -e "$ROOT$1" ]; }
dpkg_status() { [ "$(in_root dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | tr -d ' ')" = "$2" ]; }

make_root() {
    [ -d "$ROOT/usr/bin" ] && return 0
    debootstrap --variant=minbase --include=adduser,systemd bookworm "$ROOT" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
        fail "debootstrap failed: $(tail -20 "$WORK/debootstrap.log")"
}

install_all() {
    cp "$(deb callkpi-agent)" "$(deb callkpi-aggregator)" "$(deb callkpi-cli)" "$ROOT/tmp/"
    in_root dpkg -i "/tmp/$(basename "$(deb callkpi-agent)")" "/tmp/$(basename "$(deb callkpi-aggregator)")" \
        "/tmp/$(basename "$(deb callkpi-cli)")" >"$WORK/dpkg-install.log" 2>&1 ||
        fail "dpkg -i failed: $(cat "$WORK/dpkg-install.log")"
}

# Where cargo-deb put a package's unit.
unit_path() { in_root dpkg -L "$1" | grep -E "/systemd/system/$1.service\$" | head -1; }

# The state paths of the shipped configs lie under the units' ReadWritePaths.
state_under_rw_paths() {
    python3 - "$ROOT" <<'EOF'
import sys, tomllib
root = sys.argv[1]
agent = tomllib.load(open(f"{root}/etc/callkpi/agent.toml", "rb"))
agg = tomllib.load(open(f"{root}/etc/callkpi/aggregator.toml", "rb"))
spool = agent.get("spool", {}).get("path", "/var/lib/callkpi/agent/spool")
store = agg.get("store_path", "/var/lib/callkpi/aggregator")
bad = [p for p in (spool, store) if not p.startswith("/var/lib/callkpi/")]
if bad:
    sys.exit(f"not under /var/lib/callkpi (the units' only writable path): {bad}; "
             "with ProtectSystem=strict the service could not create them")
EOF
}

check_install() {
    local u pw
    check "binaries in /usr/bin" test -x "$ROOT/usr/bin/callkpi-agent" -a -x "$ROOT/usr/bin/callkpi-aggregator" -a -x "$ROOT/usr/bin/callkpi"
    check "configs are conffiles" bash -c "
        chroot '$ROOT' dpkg-query -W -f='\${Conffiles}' callkpi-agent | grep -q ' /etc/callkpi/agent.toml ' &&
        chroot '$ROOT' dpkg-query -W -f='\${Conffiles}' callkpi-aggregator | grep -q ' /etc/callkpi/aggregator.toml '"
    check "shipped configs are deploy/*.toml" bash -c "
        cmp -s deploy/agent.toml '$ROOT/etc/callkpi/agent.toml' && cmp -s deploy/aggregator.toml '$ROOT/etc/callkpi/aggregator.toml'"
    pw=$(grep '^callkpi:' "$ROOT/etc/passwd" || true)
    check "system user in the root's /etc/passwd: $pw" \
        awk -F: '$3 < 1000 && $6 == "/var/lib/callkpi" && $7 == "/usr/sbin/nologin" { ok = 1 } END { exit !ok }' <<<"$pw"
    check "group callkpi" grep -q '^callkpi:' "$ROOT/etc/group"
    check "/var/lib/callkpi callkpi:callkpi 0750" mode_owner /var/lib/callkpi "750 callkpi callkpi"
    check "/var/lib/callkpi/agent callkpi:callkpi 0750" mode_owner /var/lib/callkpi/agent "750 callkpi callkpi"
    check "/etc/callkpi root:callkpi 0750" mode_owner /etc/callkpi "750 root callkpi"
    check "/etc/callkpi/agent.toml root:callkpi 0640" mode_owner /etc/callkpi/agent.toml "640 root callkpi"
    check "/etc/callkpi/aggregator.toml root:callkpi 0640" mode_owner /etc/callkpi/aggregator.toml "640 root callkpi"
    check "units installed disabled (configure first)" \
        bash -c "! ls '$ROOT'/etc/systemd/system/multi-user.target.wants/callkpi-* 2>/dev/null"
    check "agent refuses the shipped config until it has a credential (64, names uplink.token)" \
        shipped_agent_config_refused
    check "aggregator validates the shipped config as user callkpi" in_root setpriv --reuid=callkpi --regid=callkpi \
        --init-groups /usr/bin/callkpi-aggregator validate --config /etc/callkpi/aggregator.toml
    check "cli runs" in_root /usr/bin/callkpi --version
    for u in "$(unit_path callkpi-agent)" "$(unit_path callkpi-aggregator)"; do
        check "$u: ExecStartPre validate, Restart=on-failure, User=callkpi" bash -c "
            grep -qx 'ExecStartPre=/usr/bin/callkpi-[a-z]* validate --config .*' '$ROOT$u' &&
            grep -qx 'Restart=on-failure' '$ROOT$u' && grep -qx 'User=callkpi' '$ROOT$u'"
        check "$u: hardening keys" bash -c "for k in ProtectSystem=strict NoNewPrivileges=yes \
            ReadWritePaths=/var/lib/callkpi PrivateTmp=yes ProtectHome=yes CapabilityBoundingSet= \
            RestrictAddressFamilies= SystemCallFilter=@system-service; do
              grep -qx \"\$k.*\" '$ROOT$u' || { echo \"missing \$k\" >&2; exit 1; }; done"
        check "$u: systemd-analyze verify" systemd-analyze verify --root="$ROOT" "$u"
        printf '   --  %s\n' "$(systemd-analyze security --offline=yes --root="$ROOT" "$u" 2>/dev/null | tail -1)"
    done
    check "state paths of the shipped configs under ReadWritePaths=/var/lib/callkpi" state_under_rw_paths
}

# --- booted -------------------------------------------------------------

in_ct() { nsenter -t "$LEADER" -m -u -i -n -p -r -w -- "$@"; }
# ct_metric PORT NAME: a metric served inside the container.
ct_metric() { in_ct bash -c "$(declare -f http_get metric); metric $1 '$2'"; }

stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    # systemd-nspawn shuts the container down cleanly on SIGTERM.
    terminate "$NSPAWN_PID" 60
    [ "$EXIT_CODE" != timeout ] || echo "!! container did not stop in 60 s; killed" >&2
    NSPAWN_PID=
}

boot() {
    systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$ROOT" --boot \
        >"$WORK/boot.log" 2>&1 </dev/null &
    NSPAWN_PID=$!
    leader() { LEADER=$(pgrep -P "$NSPAWN_PID" | head -1) && [ -n "$LEADER" ]; }
    eventually 30 leader || fail "systemd-nspawn did not start: $(tail "$WORK/boot.log")"
    booted() {
        local s
        s=$(in_ct systemctl is-system-running 2>/dev/null) || true
        [ "$s" = running ] || [ "$s" = degraded ]
    }
    eventually 90 booted || fail "the container did not boot: $(tail -30 "$WORK/boot.log")"
}

# The shipped aggregator config knows agent paris-pbx1 by the token
# "change-me"; a reader is added. The agent config is rewritten for a
# loopback test: its token in a root:callkpi 0640 file, queue_log in a
# directory of group adm that callkpi joins, as deploy/README.md says.
READER_TOKEN=smoke-deb-reader-0123456789
configure_and_start() {
    cat >>"$ROOT/etc/callkpi/aggregator.toml" <<EOF

[[readers]]
name = "ci"
token_sha256 = "$(printf %s "$READER_TOKEN" | in_root /usr/bin/callkpi-aggregator hash-token)"
EOF
    cat >"$ROOT/etc/callkpi/agent.toml" <<'EOF'
# local edit by the admin
agent_id = "paris-pbx1"
site = "paris"
[uplink]
url = "http://127.0.0.1:7443"
token_file = "/etc/callkpi/agent.token"
backoff_max_ms = 1000
heartbeat_interval_ms = 1000
[spool]
path = "/var/lib/callkpi/agent/spool"
[metrics]
listen = "127.0.0.1:9465"
[[sources.queue_log]]
name = "queue_log"
path = "/var/log/asterisk/queue_log"
poll_interval_ms = 100
EOF
    in_ct sh -ec '
        install -m 0640 -o root -g callkpi /dev/null /etc/callkpi/agent.token
        printf %s change-me >/etc/callkpi/agent.token
        install -d -m 0750 -o root -g adm /var/log/asterisk
        install -m 0640 -o root -g adm /dev/null /var/log/asterisk/queue_log
        adduser --quiet callkpi "$(stat -c %G /var/log/asterisk/queue_log)"
        systemctl enable --now callkpi-aggregator callkpi-agent'
    active() { in_ct systemctl is-active --quiet callkpi-aggregator callkpi-agent; }
    eventually 30 active || fail "units not active: $(in_ct systemctl status --no-pager callkpi-agent callkpi-aggregator 2>&1 | tail -30)"
}

# Appends the recording and waits until the aggregator holds every event the
# agent spooled, beyond FROM_SEQ.
deliver() {
    local from=$1
    cat tests/fixtures/asterisk/run-a/queue_log >>"$ROOT/var/log/asterisk/queue_log"
    all_acked() {
        local last hwm depth
        last=$(ct_metric 9465 callkpi_spool_last_seq) && hwm=$(ct_metric 9464 'callkpi_agent_hwm{agent="paris-pbx1"}') &&
            depth=$(ct_metric 9465 callkpi_spool_depth_events) || return 1
        [ -n "$last" ] && [ -n "$hwm" ] && [ -n "$depth" ] && [ "${last%.*}" -gt "$from" ] &&
            [ "${hwm%.*}" = "${last%.*}" ] && [ "${depth%.*}" -eq 0 ] || return 1
        LAST_SEQ=${last%.*}
    }
    eventually 60 all_acked || fail "events not delivered: $(in_ct journalctl --no-pager -n 30 -u callkpi-agent -u callkpi-aggregator)"
}

report_has_rows() {
    in_ct callkpi report --server http://127.0.0.1:7443 --token "$READER_TOKEN" --by queue --interval all \
        --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --format json >"$WORK/report.json" &&
        python3 -c 'import json, sys; sys.exit(not json.load(open(sys.argv[1]))["rows"])' "$WORK/report.json"
}
# sandboxed UNIT: its main process runs as callkpi with no capabilities,
# no_new_privs and a seccomp filter.
sandboxed() {
    local pid st
    pid=$(in_ct systemctl show -p MainPID --value "$1")
    st=$(in_ct cat "/proc/$pid/status") || return 1
    grep -qP "^Uid:\t$(in_root id -u callkpi)\t" <<<"$st" && grep -qP '^CapEff:\t0+$' <<<"$st" &&
        grep -qP '^CapBnd:\t0+$' <<<"$st" && grep -qP '^NoNewPrivs:\t1$' <<<"$st" &&
        grep -qP '^Seccomp:\t2$' <<<"$st"
}
# journal_clean UNIT: it logged, and without ANSI colour codes.
journal_clean() {
    local log
    log=$(in_ct journalctl --no-pager -o cat -u "$1") && grep -q . <<<"$log" && ! grep -q $'\x1b\[' <<<"$log"
}

check_live() {
    local u
    deliver 0
    printf '   ok  %s\n' "agent -> aggregator under systemd: $LAST_SEQ events acked"
    check "callkpi report from the aggregator has rows" report_has_rows
    for u in callkpi-agent callkpi-aggregator; do
        check "$u: runs as callkpi, no capabilities, no_new_privs, seccomp" sandboxed "$u"
        check "$u: logs in the journal, no colour codes" journal_clean "$u"
    done
}

# A newer agent package (same files, revision 2) over the running agent.
upgrade_running_agent() {
    local old_pid new_pid before=$LAST_SEQ
    # The same package with its version bumped. (Not cargo deb --deb-revision:
    # it deletes the other versions from target/debian.)
    dpkg-deb -R "$(deb callkpi-agent)" "$WORK/upgrade"
    sed -i "s/^Version: .*/Version: ${version}-2/" "$WORK/upgrade/DEBIAN/control"
    # Not /tmp: the booted container has a tmpfs there.
    dpkg-deb -b -Zxz "$WORK/upgrade" "$ROOT/root/callkpi-agent_${version}-2_amd64.deb" >/dev/null
    old_pid=$(in_ct systemctl show -p MainPID --value callkpi-agent)
    in_ct dpkg -i "/root/callkpi-agent_${version}-2_amd64.deb" >"$WORK/dpkg-upgrade.log" 2>&1 ||
        fail "upgrade failed: $(cat "$WORK/dpkg-upgrade.log")"
    new_pid=$(in_ct systemctl show -p MainPID --value callkpi-agent)
    check "upgraded to ${version}-2" bash -c "[ \"\$(chroot '$ROOT' dpkg-query -W -f='\${Version}' callkpi-agent)\" = '${version}-2' ]"
    check "running agent restarted by the upgrade (pid $old_pid -> $new_pid)" \
        bash -c "[ '$new_pid' != 0 ] && [ '$new_pid' != '$old_pid' ]"
    check "upgrade kept the local config edit" grep -q "local edit by the admin" "$ROOT/etc/callkpi/agent.toml"
    check "upgrade kept config ownership" mode_owner /etc/callkpi/agent.toml "640 root callkpi"
    deliver "$before"
    check "upgrade kept the spool: seqs go on ($before -> $LAST_SEQ), all acked" test "$LAST_SEQ" -gt "$before"
}

# gave_up UNIT: failed after StartLimitBurst starts, and stays failed.
gave_up() {
    local s n
    s=$(in_ct systemctl show -p ActiveState -p NRestarts "$1")
    n=$(sed -n 's/^NRestarts=//p' <<<"$s")
    grep -qx ActiveState=failed <<<"$s" && [ "$n" -ge 4 ] || return 1
    sleep 6 # longer than RestartSec
    [ "$(in_ct systemctl show -p ActiveState -p NRestarts "$1")" = "$s" ]
}
journal_says() { in_ct journalctl --no-pager -o cat -u "$1" | grep -q "$2"; }

bad_config_stops() {
    cp "$ROOT/etc/callkpi/agent.toml" "$WORK/agent.toml.good"
    echo "bogus_key = 1" >>"$ROOT/etc/callkpi/agent.toml"
    in_ct systemctl reset-failed callkpi-agent # a fresh start-limit count
    if in_ct systemctl restart callkpi-agent 2>/dev/null; then fail "restart with a bad config succeeded"; fi
    check "bad config: ExecStartPre says why in the journal" journal_says callkpi-agent "unknown field .bogus_key"
    check "bad config: retried, then given up (StartLimitBurst)" eventually 60 gave_up callkpi-agent
    cp "$WORK/agent.toml.good" "$ROOT/etc/callkpi/agent.toml"
    in_ct systemctl reset-failed callkpi-agent
    in_ct systemctl start callkpi-agent
    check "fixed config: agent active again" in_ct systemctl is-active --quiet callkpi-agent
}

remove_and_purge() {
    in_root dpkg -r callkpi-agent >"$WORK/dpkg-remove.log" 2>&1 || fail "dpkg -r: $(cat "$WORK/dpkg-remove.log")"
    check "remove: binary gone" absent /usr/bin/callkpi-agent
    check "remove: package in config-files state" dpkg_status callkpi-agent rc
    check "remove: config kept" grep -q "local edit by the admin" "$ROOT/etc/callkpi/agent.toml"
    check "remove: spool kept" present /var/lib/callkpi/agent/spool
    check "remove: user kept" grep -q '^callkpi:' "$ROOT/etc/passwd"
    in_root dpkg -P callkpi-agent >"$WORK/dpkg-purge.log" 2>&1 || fail "dpkg -P: $(cat "$WORK/dpkg-purge.log")"
    check "purge: agent config gone" absent /etc/callkpi/agent.toml
    check "purge: spool gone" absent /var/lib/callkpi/agent
    check "purge: the aggregator's store and config untouched" \
        bash -c "[ -e '$ROOT/etc/callkpi/aggregator.toml' ] && [ -d '$ROOT/var/lib/callkpi/aggregator' ]"
    rm -f "$ROOT/etc/callkpi/agent.token"
    in_root dpkg -P callkpi-aggregator callkpi-cli >"$WORK/dpkg-purge2.log" 2>&1 || fail "dpkg -P: $(cat "$WORK/dpkg-purge2.log")"
    check "purge of both: /var/lib/callkpi gone" absent /var/lib/callkpi
    check "purge of both: /etc/callkpi gone" absent /etc/callkpi
    check "purge of both: no callkpi package left" bash -c "! chroot '$ROOT' dpkg -l 'callkpi*' 2>/dev/null | grep -q '^[a-z][a-z] '"
}

step "deb: debootstrap bookworm minbase + systemd" make_root
step "deb: dpkg -i agent, aggregator, cli (amd64)" install_all
step "deb: files, user, units (chroot)" check_install
step "deb: boot the root (systemd-nspawn)" boot
step "deb: configure, enable --now both units" configure_and_start
step "deb: delivery and sandbox under systemd" check_live
step "deb: upgrade of the running agent" upgrade_running_agent
step "deb: bad config stops the unit" bad_config_stops
step "deb: container shutdown" stop_container
step "deb: remove keeps, purge deletes (chroot)" remove_and_purge
print_timings
