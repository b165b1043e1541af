#!/usr/bin/env bash
# Records three answered calls through Kamailio with the topoh module
# masking the Call-ID (kamailio.cfg next to this): the caller's and the
# agent's leg of each call have different Call-IDs, the agent's leg carries
# X-CID with the caller leg's. Every SIP message is mirrored as HEPv3 and
# written, length-prefixed as hep.raw is, to OUT/hep-b2bua.raw.
#
#   apt-get install -y kamailio sip-tester python3
#   bash tests/peers/sip-hep/b2bua/run.sh OUT
#
# Bounded: sipp stops after its calls, everything else is ended by PID.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:?output directory}" && cd "$1" && pwd)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 - "$out/hep-b2bua.raw" <<'PY' &
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 9070))
s.settimeout(1.0)
end, idle = time.time() + 60, 0
with open(sys.argv[1], "wb") as f:
    while time.time() < end and idle < 5:
        try:
            d = s.recv(65535)
        except socket.timeout:
            idle += 1
            continue
        idle = 0
        f.write(struct.pack("!I", len(d)) + d)
        f.flush()
PY
pids+=($!)
sleep 0.5
kamailio -f "$here/kamailio.cfg" -DD -E -m 32 -M 8 -Y "$out" -P "$out/kamailio.pid" >"$out/kamailio.log" 2>&1 &
pids+=($!)
sipp -sn uas -i 127.0.0.3 -p 5091 -m 3 -timeout 40 -nostdin >"$out/sipp-uas.log" 2>&1 &
pids+=($!)
sleep 1
status=0
sipp -sn uac 127.0.0.1:5090 -s 2001 -i 127.0.0.2 -p 5071 -m 3 -r 1 -d 2000 -timeout 30 -timeout_error -nostdin \
  >"$out/sipp-uac.log" 2>&1 || status=$?
echo "sipp caller exit: $status"
# Let the last BYE's mirror arrive, then the listener stops after 5 s idle.
wait "${pids[0]}"
ls -l "$out/hep-b2bua.raw"
exit "$status"
