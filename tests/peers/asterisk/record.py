#!/usr/bin/env python3
"""Records a real Asterisk call-centre run on loopback (run-b and later).

Starts the Asterisk built by build.sh with the configuration in
<scenario>/config, connects two AMI sessions (an observer that reads every
event, as callkpi's edge agent does, and a driver that adds, pauses and
removes members), drops call files into the spool at the scenario's times,
asks QueueStatus at the end, stops Asterisk, and writes into OUT_DIR:

  ami.log             every byte the observer received, banner to EOF
  ami.recv_index.tsv  one line per recv(): epoch, byte offset, length
  ami.sent.log        what the observer sent, each action after a "# epoch" line
  ami-driver.log      the driver's transcript (">>> epoch" before what it sent)
  queue_log           Asterisk's queue_log
  Master.csv          CDRs from cdr_csv
  scenario.json       the plan (intent only: what happened is in the logs)
  config/             the configuration used

Only 127.0.0.1 is used; every wait is bounded. Usage:

  tests/peers/asterisk/record.py run-b OUT_DIR   (PREFIX: where build.sh installed)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Defaults follow build.sh: a cache directory outside the repository.
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "callkpi")
PREFIX = os.environ.get("PREFIX", os.path.join(CACHE, "asterisk", "install"))
RUN_DIR = os.environ.get("RUN_DIR", os.path.join(CACHE, "asterisk-run"))
AMI = ("127.0.0.1", 5038)


def scenario_b():
    """run-b: every exit of Queue(). Times are seconds after the start."""
    calls = [
        # id, t, queue, caller name, number, variables
        ("b00", 1, "support", "Alice Caller", "0611000001", {"_TALK": 40, "PATIENCE": 300}),
        ("b01", 2, "support", "Bernard Lévy", "0611000002", {"_TALK": 40, "PATIENCE": 300}),
        # Queue() timeout of 12 s: EXITWITHTIMEOUT, then the dialplan hangs up
        ("b02", 3, "support", "Chloé Timeout", "0611000003", {"QTIMEOUT": 12, "PATIENCE": 300}),
        # timeout, then overflow into sales where Dmitri answers
        ("b03", 4, "support", "Łukasz Overflow", "0611000004",
         {"QTIMEOUT": 14, "OVERFLOW": "sales", "_TALK": 12, "PATIENCE": 300}),
        # hangs up after 9 s: ABANDON
        ("b04", 5, "support", "Dora Abandon", "0611000005", {"PATIENCE": 9}),
        # presses 5 after 8 s: EXITWITHKEY (support's context = support-exit)
        ("b05", 6, "support", "Émile Key", "0611000006", {"EXIT_DIGIT": "5", "EXIT_AFTER": 8}),
        # waits until an agent is free (past the 20 s service level)
        ("b06", 7, "support", "Fatima Patient", "0611000007", {"_TALK": 10, "PATIENCE": 300}),
        ("b07", 10, "sales", "Giulia Rossi", "0611000008", {"_TALK": 15, "PATIENCE": 300}),
        # no member: JOINEMPTY, no ENTERQUEUE
        ("b08", 20, "night", "Hugo Night", "0611000009", {"PATIENCE": 300}),
        # the only seat of tiny, rung in vain: EXITWITHTIMEOUT after 20 s
        ("b09", 25, "tiny", "Inès Tiny", "0611000010", {"QTIMEOUT": 20, "PATIENCE": 300}),
        # tiny is full: FULL, no ENTERQUEUE
        ("b10", 28, "tiny", "Jan Full", "0611000011", {"PATIENCE": 300}),
        # Carla (never answers) is paused while this caller waits: EXITEMPTY
        ("b11", 50, "backoffice", "Karl Empty", "0611000012", {"QTIMEOUT": 60, "PATIENCE": 300}),
        ("b12", 60, "support", "Léa Quick", "0611000013", {"_TALK": 12, "PATIENCE": 300}),
        # hangs up 5 s into the conversation: COMPLETECALLER
        ("b13", 62, "support", "Marc Midtalk", "0611000014", {"_TALK": 30, "HANGUP_AFTER": 5, "PATIENCE": 300}),
        # gives up after 3 s while both agents talk: a short abandon
        ("b14", 64, "support", "Nina Short", "0611000015", {"PATIENCE": 3}),
        ("b15", 70, "sales", "Oscar Late", "0611000016", {"_TALK": 8, "PATIENCE": 300}),
        # a repeat caller (b04's number) 80 s after the first try
        ("b16", 85, "support", "Dora Abandon", "0611000005", {"_TALK": 6, "PATIENCE": 300}),
    ]
    actions = [
        (0, {"Action": "QueueAdd", "Queue": "backoffice", "Interface": "Local/1003@agents/n",
             "MemberName": "Carla Jiménez", "Paused": "false"}),
        (54, {"Action": "QueuePause", "Queue": "backoffice", "Interface": "Local/1003@agents/n",
              "Paused": "true", "Reason": "meeting"}),
        (100, {"Action": "QueuePause", "Queue": "backoffice", "Interface": "Local/1003@agents/n",
               "Paused": "false"}),
        (104, {"Action": "QueueRemove", "Queue": "backoffice", "Interface": "Local/1003@agents/n"}),
    ]
    return {"calls": calls, "actions": actions, "end": 125}


SCENARIOS = {"run-b": scenario_b}


def message(fields):
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"


class Observer(threading.Thread):
    """The reading session: keeps every received byte and when it came."""

    def __init__(self, out_dir):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(AMI, timeout=5)
        self.sock.settimeout(1.0)
        self.log = open(os.path.join(out_dir, "ami.log"), "wb")
        self.index = open(os.path.join(out_dir, "ami.recv_index.tsv"), "w")
        self.sent = open(os.path.join(out_dir, "ami.sent.log"), "w", encoding="utf-8")
        self.offset = 0
        self.eof = threading.Event()
        self.stop = threading.Event()

    def send(self, fields):
        self.sent.write(f"# {time.time():.6f}\n")
        self.sent.write(message(fields).replace("\r\n", "\n"))
        self.sent.flush()
        self.sock.sendall(message(fields).encode())

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            now = time.time()
            if not data:
                break
            self.index.write(f"{now:.6f}\t{self.offset}\t{len(data)}\n")
            self.log.write(data)
            self.offset += len(data)
        self.log.close()
        self.index.close()
        self.sent.close()
        self.eof.set()


class Driver:
    """The acting session; its transcript is kept for the README."""

    def __init__(self, out_dir):
        self.sock = socket.create_connection(AMI, timeout=5)
        self.sock.settimeout(0.2)
        self.log = open(os.path.join(out_dir, "ami-driver.log"), "wb")
        self.n = 0
        self.drain()

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                return
            if not data:
                return
            self.log.write(data)
            self.log.flush()

    def send(self, fields):
        self.n += 1
        fields = dict(fields, ActionID=f"drv-{self.n}")
        self.log.write(f">>> {time.time():.6f}\r\n".encode())
        self.log.write(message(fields).encode())
        self.sock.sendall(message(fields).encode())
        time.sleep(0.3)
        self.drain()


def call_file(spool, run_dir, call):
    cid, _, queue, name, number, variables = call
    lines = [
        f"Channel: Local/{queue}@inbound/n",
        "Context: customer",
        "Extension: s",
        "Priority: 1",
        f'CallerID: "{name}" <{number}>',
        "MaxRetries: 0",
        "WaitTime: 30",
    ] + [f"Setvar: {k}={v}" for k, v in variables.items()]
    tmp = os.path.join(run_dir, f"{cid}.call")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    # A call file must appear in the spool whole: rename, never write there.
    os.rename(tmp, os.path.join(spool, f"{cid}.call"))


def setup(scenario_dir):
    if os.path.exists(RUN_DIR):
        shutil.rmtree(RUN_DIR)
    etc = os.path.join(RUN_DIR, "etc")
    shutil.copytree(os.path.join(scenario_dir, "config"), etc)
    dirs = {d: os.path.join(RUN_DIR, d) for d in ("lib", "spool", "run", "log")}
    for d in dirs.values():
        os.makedirs(d)
    os.makedirs(os.path.join(dirs["spool"], "outgoing"))
    os.makedirs(os.path.join(dirs["log"], "cdr-csv"))
    with open(os.path.join(etc, "asterisk.conf"), "w") as f:
        f.write(
            "[directories]\n"
            f"astetcdir => {etc}\n"
            f"astmoddir => {PREFIX}/lib/asterisk/modules\n"
            f"astvarlibdir => {dirs['lib']}\n"
            f"astdbdir => {dirs['lib']}\n"
            f"astkeydir => {dirs['lib']}\n"
            f"astdatadir => {PREFIX}/var/lib/asterisk\n"
            f"astagidir => {PREFIX}/var/lib/asterisk/agi-bin\n"
            f"astspooldir => {dirs['spool']}\n"
            f"astrundir => {dirs['run']}\n"
            f"astlogdir => {dirs['log']}\n"
            f"astsbindir => {PREFIX}/sbin\n"
            "[options]\nverbose = 3\ndebug = 0\ndocumentation_language = en_US\nhideconnect = no\n"
        )
    return etc, dirs


def wait_for_ami(proc, limit=60.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"asterisk exited early with {proc.returncode}")
        try:
            socket.create_connection(AMI, timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("AMI did not come up")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(SCENARIOS)}}} OUT_DIR")
    name, out_dir = sys.argv[1], os.path.abspath(sys.argv[2])
    plan = SCENARIOS[name]()
    scenario_dir = os.path.join(HERE, name)
    os.makedirs(out_dir, exist_ok=True)
    etc, dirs = setup(scenario_dir)
    console = open(os.path.join(RUN_DIR, "console.log"), "wb")
    proc = subprocess.Popen(
        [f"{PREFIX}/sbin/asterisk", "-C", os.path.join(etc, "asterisk.conf"), "-f", "-n", "-g"],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_ami(proc)
        time.sleep(2)
        obs = Observer(out_dir)
        obs.start()
        obs.send({"Action": "Login", "ActionID": "login-1", "Username": "edgeagent",
                  "Secret": "test-only-not-a-secret", "Events": "on"})
        time.sleep(1)
        obs.send({"Action": "CoreSettings", "ActionID": "coresettings-1"})
        obs.send({"Action": "QueueStatus", "ActionID": "qstatus-start"})
        obs.send({"Action": "QueueSummary", "ActionID": "qsummary-start"})
        drv = Driver(out_dir)
        drv.send({"Action": "Login", "Username": "driver", "Secret": "test-only-driver", "Events": "off"})
        t0 = time.time() + 1
        steps = [(t, "call", c) for c in plan["calls"] for t in [c[1]]]
        steps += [(t, "action", a) for t, a in plan["actions"]]
        steps.sort(key=lambda s: s[0])
        log = []
        for t, kind, what in steps:
            delay = t0 + t - time.time()
            if delay > 0:
                time.sleep(delay)
            if kind == "call":
                call_file(os.path.join(dirs["spool"], "outgoing"), RUN_DIR, what)
                log.append({"t": t, "type": "call", "id": what[0], "queue": what[2], "cid_name": what[3],
                            "cid_num": what[4], "vars": what[5], "dropped_at": time.time()})
            else:
                drv.send(what)
                log.append({"t": t, "type": "ami", "action": what, "sent_at": time.time()})
        time.sleep(max(0.0, t0 + plan["end"] - time.time()))
        obs.send({"Action": "QueueStatus", "ActionID": "qstatus-end"})
        obs.send({"Action": "QueueSummary", "ActionID": "qsummary-end"})
        time.sleep(2)
        drv.send({"Action": "Command", "Command": "core stop gracefully"})
        obs.eof.wait(30)
        obs.stop.set()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    shutil.copy(os.path.join(dirs["log"], "queue_log"), os.path.join(out_dir, "queue_log"))
    shutil.copy(os.path.join(dirs["log"], "cdr-csv", "Master.csv"), os.path.join(out_dir, "Master.csv"))
    cfg_out = os.path.join(out_dir, "config")
    if os.path.exists(cfg_out):
        shutil.rmtree(cfg_out)
    shutil.copytree(os.path.join(scenario_dir, "config"), cfg_out)
    with open(os.path.join(out_dir, "scenario.json"), "w", encoding="utf-8") as f:
        json.dump({"scenario": name, "t0": t0, "events": log}, f, ensure_ascii=False, indent=1)
    print(f"recorded {name} into {out_dir}")


if __name__ == "__main__":
    main()
