#!/usr/bin/env bash
# callkpi SIP/HEP peer: real Kamailio + real sipp endpoints on loopback,
# Kamailio mirrors all SIP as HEPv3 to a collector on 127.0.0.1:9060.
#
# usage: run.sh [OUTPUT_DIR]          (default: ./sip-hep-out)
# env:   HEP_MODE=script|dialog|core  how Kamailio's siptrace is driven (default script)
#        HEP_PORT=9060                 collector port
#        NO_TSHARK=1                   do not capture a pcap even if tshark is installed
#        CALL_SCALE=1                  multiply every scenario's call count (1..5)
#        HEP_COLLECTOR=external        (callkpi port) do not start hep_listen.py: a collector
#                                      of the caller's is already bound to 127.0.0.1:HEP_PORT and
#                                      appends every datagram to OUTPUT_DIR/hep.raw; hep.raw is
#                                      decoded offline with hep_listen.py --read-raw afterwards
#
# Installs nothing. Needs (Debian 12):
#   apt-get install -y kamailio sip-tester python3 tshark
# Everything stays on 127.0.0.0/8; every process it starts is stopped by PID.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_ARG="${1:-./sip-hep-out}"
mkdir -p "$OUT_ARG" || { echo "run.sh: cannot create $OUT_ARG" >&2; exit 2; }
OUT="$(cd "$OUT_ARG" && pwd)"
HEP_MODE="${HEP_MODE:-script}"
HEP_PORT="${HEP_PORT:-9060}"
CALL_SCALE="${CALL_SCALE:-1}"
HEP_COLLECTOR="${HEP_COLLECTOR:-listen}"
case "$HEP_COLLECTOR" in listen|external) ;; *) echo "run.sh: HEP_COLLECTOR must be listen or external" >&2; exit 2 ;; esac

APT_LINE="apt-get install -y kamailio sip-tester python3 tshark"
missing=""
for tool in kamailio sipp python3; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "run.sh: missing:$missing" >&2
  echo "run.sh: install with: $APT_LINE" >&2
  exit 3
fi
HAVE_TSHARK=0
if [ -z "${NO_TSHARK:-}" ] && command -v tshark >/dev/null 2>&1; then HAVE_TSHARK=1; fi
if [ "$HAVE_TSHARK" = 0 ] && [ -z "${NO_TSHARK:-}" ]; then
  echo "run.sh: tshark not found: no pcap and no tshark check (install: $APT_LINE)" >&2
fi
case "$HEP_MODE" in
  script) KAM_DEFS=() ;;
  dialog) KAM_DEFS=(-A WITH_HEP_DIALOG) ;;
  core)   KAM_DEFS=(-A WITH_HEP_CORE) ;;
  *) echo "run.sh: HEP_MODE must be script, dialog or core" >&2; exit 2 ;;
esac
case "$CALL_SCALE" in 1|2|3|4|5) ;; *) echo "run.sh: CALL_SCALE must be 1..5" >&2; exit 2 ;; esac
UAC_TIMEOUT_S=$((100 * CALL_SCALE + 50))   # sipp -timeout for each caller process
DEADLINE_S=$((UAC_TIMEOUT_S + 30))         # hard bound for agents and the collector

udp_bound() {    # udp_bound IP:PORT -> is a UDP socket bound there? (reads /proc/net/udp)
  local ip="${1%:*}" port="${1##*:}" a b c d key
  IFS=. read -r a b c d <<<"$ip"
  key="$(printf '%02X%02X%02X%02X:%04X' "$d" "$c" "$b" "$a" "$port")"
  awk -v k="$key" 'NR > 1 && $2 == k { found = 1 } END { exit !found }' /proc/net/udp
}

# refuse to start on top of something already bound to our sockets
busy=""
HEP_SOCK="127.0.0.1:$HEP_PORT"
[ "$HEP_COLLECTOR" = external ] && HEP_SOCK=""
for sock in 127.0.0.1:5060 $HEP_SOCK 127.0.0.2:5060 127.0.0.2:5061 127.0.0.2:5062 \
            127.0.0.2:5063 127.0.0.2:5064 127.0.0.2:5065 127.0.0.3:5060 127.0.0.4:5060 \
            127.0.0.5:5060 127.0.0.6:5060 127.0.0.7:5060 127.0.0.8:5060; do
  udp_bound "$sock" && busy="$busy $sock"
done
if [ -n "$busy" ]; then
  echo "run.sh: UDP sockets already in use:$busy (another run?)" >&2
  exit 4
fi

rm -rf "$OUT/sipp" "$OUT/run"
[ "$HEP_COLLECTOR" = listen ] && rm -f "$OUT"/hep.raw
rm -f "$OUT"/hep.pcap "$OUT"/hep_decoded.csv "$OUT"/hep_summary.json \
      "$OUT"/ground_truth.json "$OUT"/calls.csv "$OUT"/check.json "$OUT"/tshark_check.txt \
      "$OUT"/tshark_fields.tsv "$OUT"/kamailio.log "$OUT"/hep_listen.log "$OUT"/run.log \
      "$OUT"/run_info.json
mkdir -p "$OUT/sipp" "$OUT/run"
# work inside the output directory with relative output paths, so that no
# absolute path of this machine ends up in the logs that are kept
cd "$OUT" || exit 2
exec > >(tee run.log) 2>&1

PIDS=()          # every background process we start, for cleanup
log() { printf '%s run.sh: %s\n' "$(date +%H:%M:%S)" "$*"; }

stop_pid() {     # stop_pid PID NAME [SIGNAL]: signal one process we started, wait <=5 s
  local pid="$1" name="$2" sig="${3:-TERM}" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) still alive after SIG$sig, sending KILL"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null && stop_pid "$p" "pid $p"
  done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

wait_for() {     # wait_for TRIES CMD...: poll every 0.1 s
  local tries="$1" i; shift
  for i in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

log "output: $OUT_ARG  mode: $HEP_MODE  hep: 127.0.0.1:$HEP_PORT"
T0=$(date +%s)

# 1. HEP collector -------------------------------------------------------
HEP_PID=""
if [ "$HEP_COLLECTOR" = listen ]; then
  python3 "$HERE/hep_listen.py" --bind 127.0.0.1 --port "$HEP_PORT" \
    --raw hep.raw --csv hep_decoded.csv --summary hep_summary.json \
    --max-seconds "$DEADLINE_S" --ready-file run/hep.ready --quiet \
    > hep_listen.log 2>&1 &
  HEP_PID=$!; PIDS+=("$HEP_PID")
  wait_for 50 test -e run/hep.ready || { log "HEP listener did not start"; cat hep_listen.log; exit 5; }
else
  udp_bound "127.0.0.1:$HEP_PORT" || { log "HEP_COLLECTOR=external but nothing is bound to 127.0.0.1:$HEP_PORT"; exit 5; }
fi

# 2. pcap of the HEP feed (capture filter: only our collector port) --------
TSHARK_PID=""
if [ "$HAVE_TSHARK" = 1 ]; then
  tshark -i lo -f "udp and dst host 127.0.0.1 and dst port $HEP_PORT" -F pcap -w hep.pcap -q \
    > run/tshark.log 2>&1 &
  TSHARK_PID=$!; PIDS+=("$TSHARK_PID")
  if ! wait_for 100 grep -q "Capturing on" run/tshark.log; then
    log "tshark did not start capturing (see run/tshark.log); going on without pcap"
    stop_pid "$TSHARK_PID" tshark; TSHARK_PID=""
  fi
fi

# 3. Kamailio --------------------------------------------------------------
KAM_ARGS=(-f "$HERE/kamailio.cfg" -DD -E -m 64 -M 8 -n 2 -Y "$OUT/run" -P "$OUT/run/kamailio.pid"
          "${KAM_DEFS[@]}" -A "HEP_URI=\"sip:127.0.0.1:$HEP_PORT\"")
kamailio "${KAM_ARGS[@]}" > kamailio.log 2>&1 &
KAM_PID=$!; PIDS+=("$KAM_PID")
if ! wait_for 100 udp_bound 127.0.0.1:5060; then
  log "Kamailio did not bind 127.0.0.1:5060"; tail -20 kamailio.log; exit 6
fi

# 4. agents (sipp UAS), one per loopback "host" ----------------------------
SIPP_COMMON=(-nostdin -bind_local -trace_logs -trace_shortmsg -trace_msg -trace_err)
start_uas() {  # start_uas NAME IP SCENARIO [extra sipp args...]
  local name="$1" ip="$2" sf="$3"; shift 3
  sipp -sf "$HERE/scenarios/$sf" -i "$ip" -p 5060 "${SIPP_COMMON[@]}" -callid_slash_ign \
    -log_file "sipp/$name.log" -shortmessage_file "sipp/$name.short" \
    -message_file "sipp/$name.msg" -error_file "sipp/$name.err" \
    -timeout "${DEADLINE_S}s" "$@" > "sipp/$name.screen" 2>&1 &
  PIDS+=("$!"); UAS_PIDS+=("$!")
}
UAS_PIDS=()
start_uas agent_2001_answer      127.0.0.3 uas_answer.xml
start_uas agent_2002_busy        127.0.0.4 uas_busy.xml -d 300
start_uas agent_2003_ringing     127.0.0.5 uas_ringing.xml
start_uas agent_2004_transfer    127.0.0.6 uas_transfer.xml -key transfer_to 2001
start_uas agent_2005_unavailable 127.0.0.7 uas_unavailable.xml -d 1200
start_uas agent_2006_hold        127.0.0.8 uas_hold.xml
for ip in 3 4 5 6 7 8; do
  wait_for 50 udp_bound "127.0.0.$ip:5060" || { log "agent on 127.0.0.$ip did not start"; exit 7; }
done

# 5. callers (sipp UAC), one process per scenario, all on 127.0.0.2 ---------
#    name scenario csv port calls period
CALLERS=(
  "answered  uac_answered.xml  answered.csv  5060 20 4s"
  "abandoned uac_abandoned.xml abandoned.csv 5061 8  8s"
  "rejected  uac_rejected.xml  rejected.csv  5062 8  6s"
  "noanswer  uac_noanswer.xml  noanswer.csv  5063 4  12s"
  "transfer  uac_transfer.xml  transfer.csv  5064 6  12s"
  "hold      uac_hold.xml      hold.csv      5065 4  15s"
)
UAC_PIDS=(); UAC_NAMES=()
for line in "${CALLERS[@]}"; do
  read -r name sf csvf port calls period <<<"$line"
  calls=$((calls * CALL_SCALE))
  sipp 127.0.0.1:5060 -sf "$HERE/scenarios/$sf" -inf "$HERE/csv/$csvf" \
    -i 127.0.0.2 -p "$port" "${SIPP_COMMON[@]}" \
    -m "$calls" -r 1 -rp "$period" -l 10 -recv_timeout 40s -timeout "${UAC_TIMEOUT_S}s" \
    -trace_stat -stf "sipp/caller_$name.stat.csv" -fd 5 \
    -log_file "sipp/caller_$name.log" -shortmessage_file "sipp/caller_$name.short" \
    -message_file "sipp/caller_$name.msg" -error_file "sipp/caller_$name.err" \
    > "sipp/caller_$name.screen" 2>&1 &
  PIDS+=("$!"); UAC_PIDS+=("$!"); UAC_NAMES+=("$name")
done
log "started ${#UAC_PIDS[@]} caller processes and ${#UAS_PIDS[@]} agents; waiting for the calls"

# sipp -timeout already bounds each caller; this loop bounds the wait again
UAC_RC=()
wait_deadline=$(( $(date +%s) + UAC_TIMEOUT_S + 20 ))
for i in "${!UAC_PIDS[@]}"; do
  pid="${UAC_PIDS[$i]}"
  for _ in $(seq 1 $(( (UAC_TIMEOUT_S + 20) * 2 ))); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(date +%s)" -ge "$wait_deadline" ] && break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "caller ${UAC_NAMES[$i]} still running at the deadline, stopping it"
    stop_pid "$pid" "caller ${UAC_NAMES[$i]}"
    rc=124
  else
    wait "$pid"; rc=$?
  fi
  UAC_RC+=("${UAC_NAMES[$i]}=$rc")
  log "caller ${UAC_NAMES[$i]} finished rc=$rc (0 = every call as scripted)"
done

# 6. let the last ACK/BYE/timewait settle, then stop everything by PID -----
sleep 2
for p in "${UAS_PIDS[@]}"; do stop_pid "$p" agent; done
stop_pid "$KAM_PID" kamailio
sleep 0.5
[ -n "$TSHARK_PID" ] && stop_pid "$TSHARK_PID" tshark INT
[ -n "$HEP_PID" ] && stop_pid "$HEP_PID" hep_listen
if [ "$HEP_COLLECTOR" = external ]; then
  # the external collector wrote hep.raw; decode it the same way for the cross-check
  python3 "$HERE/hep_listen.py" --read-raw hep.raw --csv hep_decoded.csv --summary hep_summary.json \
    --quiet > hep_listen.log 2>&1
fi
trap - EXIT
log "all processes stopped after $(( $(date +%s) - T0 )) s"

# 7. ground truth from sipp's own logs, cross-checked against the HEP feed --
python3 "$HERE/ground_truth.py" --sipp-dir sipp --hep-csv hep_decoded.csv \
  --out-json ground_truth.json --out-csv calls.csv --check-json check.json
GT_RC=$?

# 8. independent check of the pcap with tshark + a small Lua HEP3 dissector -
TS_RC=0
if [ -n "$TSHARK_PID" ] && [ -s hep.pcap ]; then
  tshark -r hep.pcap -X "lua_script:$HERE/hep3.lua" -T fields -E separator=/t -E header=y \
    -e frame.number -e hep3.version -e hep3.length -e hep3.ts_sec -e hep3.ts_usec \
    -e hep3.src_ip -e hep3.src_port -e hep3.dst_ip -e hep3.dst_port -e hep3.proto_type \
    -e hep3.capture_id -e sip.Method -e sip.Status-Code -e sip.Call-ID -e sip.CSeq \
    > tshark_fields.tsv 2> run/tshark_read.err
  python3 "$HERE/ground_truth.py" --tshark-check tshark_fields.tsv \
    --hep-csv hep_decoded.csv > tshark_check.txt
  TS_RC=$?
  cat tshark_check.txt
fi

# 9. what produced this run --------------------------------------------------
{
  printf '{\n  "hep_mode": "%s",\n  "hep_port": %s,\n  "call_scale": %s,\n' "$HEP_MODE" "$HEP_PORT" "$CALL_SCALE"
  printf '  "kamailio": "%s",\n' "$(kamailio -v 2>/dev/null | head -1 | sed 's/ *$//')"
  printf '  "sipp": "%s",\n' "$(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ]*' | head -1)"
  printf '  "tshark": "%s",\n' "$( [ "$HAVE_TSHARK" = 1 ] && tshark -v 2>/dev/null | head -1 )"
  printf '  "callers_exit_codes": "%s",\n' "${UAC_RC[*]}"
  printf '  "started_utc": "%s",\n  "duration_s": %s\n}\n' "$(date -u -d "@$T0" +%FT%TZ)" "$(( $(date +%s) - T0 ))"
} > run_info.json

log "callers: ${UAC_RC[*]}"
log "files:" $(ls -d hep.raw hep.pcap hep_decoded.csv hep_summary.json ground_truth.json calls.csv \
               check.json tshark_check.txt run_info.json kamailio.log sipp 2>/dev/null)
log "done in $(( $(date +%s) - T0 )) s"
[ "$GT_RC" = 0 ] && [ "$TS_RC" = 0 ] || exit 1
exit 0
