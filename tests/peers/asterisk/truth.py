#!/usr/bin/env python3
"""Ground truth of a recorded Asterisk run, from Asterisk's own output only.

Reads OUT_DIR/queue_log (what app_queue logged) and OUT_DIR/ami.log (the
QueueParams Asterisk answered to the final QueueStatus, and the QUEUESTATUS
of callers refused at the door, which Asterisk 22 does not log in
queue_log), and writes OUT_DIR/truth.json. callkpi is not involved.

Usage: tests/peers/asterisk/truth.py OUT_DIR
"""

import collections
import json
import os
import re
import sys

DEFINITIONS = {
    "entered": "ENTERQUEUE lines of the queue (an overflowed or transferred call enters a second queue "
               "with the same callid and counts in both)",
    "answered": "CONNECT lines",
    "abandoned": "ABANDON lines (the caller hung up while waiting)",
    "exit_with_timeout": "EXITWITHTIMEOUT lines (Queue()'s timeout argument expired)",
    "exit_with_key": "EXITWITHKEY lines (the caller pressed a digit of the queue's context)",
    "exit_empty": "EXITEMPTY lines (leavewhenempty: no usable member left)",
    "refused_joinempty / refused_full": "callers Queue() refused at the door; Asterisk 22 logs no queue_log line "
                                        "for them, so they are counted from the AMI VarSet QUEUESTATUS=JOINEMPTY/FULL "
                                        "of the channel whose last Newexten ran Queue(<queue>,...)",
    "answered_within_sl": "CONNECT lines whose holdtime (data1) <= the queue's servicelevel (what app_queue "
                          "counts in callscompletedinsl)",
    "abandoned_within_sl": "ABANDON, EXITWITHTIMEOUT and EXITEMPTY lines whose waittime <= servicelevel (what "
                           "app_queue counts in callsabandonedinsl: its record_abandoned runs for all three)",
    "asterisk_reported_at_end": "QueueParams returned by Asterisk to the QueueStatus sent at the end of the run "
                                "(Holdtime/TalkTime are Asterisk's running averages, not means)",
    "ami_queuestatus_values": "VarSet QUEUESTATUS values seen on AMI, by value",
}


def read_queue_log(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) >= 5:
                rows.append(parts)
    return rows


def ami_messages(path):
    raw = open(path, "rb").read().decode("utf-8", "replace")
    for block in re.split(r"\r\n\r\n", raw):
        d = {}
        for line in block.split("\r\n"):
            if ": " in line:
                k, v = line.split(": ", 1)
                d.setdefault(k, v)
            elif line.endswith(":"):
                d.setdefault(line[:-1], "")
        if d:
            yield d


def main():
    out = sys.argv[1]
    ql = read_queue_log(os.path.join(out, "queue_log"))
    verbs = collections.Counter(r[4] for r in ql)
    at_end = {}
    queuestatus = collections.Counter()
    refused = collections.defaultdict(collections.Counter)
    queue_app = {}
    ami_counts = collections.Counter()
    in_final = False
    for m in ami_messages(os.path.join(out, "ami.log")):
        ev = m.get("Event")
        if ev:
            ami_counts[ev] += 1
        if m.get("ActionID") == "qstatus-end" and ev == "QueueParams":
            at_end[m["Queue"]] = {k: m[k] for k in ("Completed", "Abandoned", "Holdtime", "TalkTime",
                                                    "ServiceLevel", "ServicelevelPerf", "ServicelevelPerf2",
                                                    "Calls", "Max", "Strategy")}
            in_final = True
        if ev == "Newexten" and m.get("Application") == "Queue":
            queue_app[m.get("Uniqueid")] = re.split(r"[,|]", m.get("AppData", ""))[0]
        if ev == "VarSet" and m.get("Variable") == "QUEUESTATUS":
            value = m.get("Value", "")
            queuestatus[value] += 1
            if value in ("JOINEMPTY", "FULL") and m.get("Uniqueid") in queue_app:
                refused[queue_app[m["Uniqueid"]]][value] += 1
    assert in_final, "no final QueueParams in ami.log"
    servicelevel = {q: int(p["ServiceLevel"]) for q, p in at_end.items()}

    queues = collections.defaultdict(lambda: collections.Counter())
    calls = collections.defaultdict(list)
    open_legs = {}
    for r in ql:
        t, callid, queue, agent, verb = int(r[0]), r[1], r[2], r[3], r[4]
        data = r[5:]
        q = queues[queue]
        key = (callid, queue)
        sl = servicelevel.get(queue)
        if verb == "ENTERQUEUE":
            q["entered"] += 1
            open_legs[key] = {"queue": queue, "entered": t, "caller": data[1] if len(data) > 1 else ""}
            calls[callid].append(open_legs[key])
        elif verb == "CONNECT":
            q["answered"] += 1
            wait = int(data[0])
            q["answered_wait_sum_s"] += wait
            if sl is not None and wait <= sl:
                q["answered_within_sl"] += 1
            if key in open_legs:
                open_legs[key].update(outcome="answered", agent=agent, wait_s=wait)
        elif verb in ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY"):
            name = {"ABANDON": "abandoned", "EXITWITHTIMEOUT": "exit_with_timeout",
                    "EXITEMPTY": "exit_empty", "EXITWITHKEY": "exit_with_key"}[verb]
            q[name] += 1
            wait = int(data[3] if verb == "EXITWITHKEY" else data[2])
            if verb != "EXITWITHKEY" and sl is not None and wait <= sl:
                q["abandoned_within_sl"] += 1
            if key in open_legs:
                open_legs[key].update(outcome=name, wait_s=wait)
        elif verb in ("COMPLETEAGENT", "COMPLETECALLER"):
            q[verb.lower()] += 1
            q["talk_sum_s"] += int(data[1])
            if key in open_legs:
                open_legs[key].update(end=verb, talk_s=int(data[1]))
    result_queues = {}
    for name in sorted(set(queues) | set(at_end) | set(refused)):
        if name == "NONE":
            continue
        q = dict(queues.get(name, {}))
        q["refused_joinempty"] = refused[name]["JOINEMPTY"]
        q["refused_full"] = refused[name]["FULL"]
        result_queues[name] = q
    truth = {
        "definitions": DEFINITIONS,
        "source": "computed by tests/peers/asterisk/truth.py from queue_log and ami.log only",
        "window": {"first": int(ql[0][0]), "last": int(ql[-1][0])},
        "queue_log_verb_counts": dict(sorted(verbs.items())),
        "queues": result_queues,
        "asterisk_reported_at_end": at_end,
        "ami_queuestatus_values": dict(sorted(queuestatus.items())),
        "ami_event_counts_for_cross_check": {k: ami_counts[k] for k in sorted(ami_counts) if k.startswith(("Queue", "Agent"))},
        "calls": calls,
    }
    with open(os.path.join(out, "truth.json"), "w", encoding="utf-8") as f:
        json.dump(truth, f, ensure_ascii=False, indent=1, sort_keys=False)
        f.write("\n")
    print(json.dumps({"queues": result_queues, "asterisk_reported_at_end": at_end}, indent=1))


if __name__ == "__main__":
    main()
