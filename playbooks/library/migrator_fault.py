#!/usr/bin/python
"""Ansible module: install, revert and list migrator network faults on a node, with a dead man's switch.

Actions (``action``):

- ``facts``: the node's interfaces with their addresses and the SSH path of this connection; set as the
  fact ``migrator_fault`` = ``{"interfaces": {name: ["ip/len"]}, "ssh": {...} | null, "faults": [...]}``.
- ``inject``: ``spec`` = ``{"id", "kind", "ttl", "install": [argv], "revert": [argv], "readback": [argv],
  "meta": {...}}``. In this order: writes the record ``<dir>/<id>.json`` and the revert script
  ``<dir>/<id>.revert.sh``, starts the detached timer (``sleep TTL; sh <id>.revert.sh`` in its own session,
  no resident agent; with ``heartbeat`` (a file migrator keeps touching) and ``lease`` (seconds) in the
  spec, it reverts as soon as that file is older than the lease: see :func:`timer_command`), then runs the
  install commands. A failing install command reverts at once and fails.
  Sets ``migrator_fault`` = ``{"record": {...}, "evidence": {cmd: output}, "before": {cmd: output}}``
  (``before``: the same readback taken just before the install commands).
- ``revert``: ``ids`` (list; empty with ``all: true`` = every record) → runs each revert script (the same
  one the timer runs) and stops the timer; sets ``migrator_fault`` = ``{"reverted": [id], "evidence": ...,
  "drift": [str]}`` where drift lists what is still there (rule comments, chains, qdisc handles).
- ``list``: sets ``migrator_fault`` = ``{"faults": [record], "reverts": [{id, by, at}]}`` (expired records
  included, flagged; ``reverts``: the last lines of ``/run/migrator/fault-reverts.log``, who reverted which
  fault when: ``ttl``, ``heartbeat`` or ``explicit``).

Explicit and expiry reverts exclude each other with ``flock`` on ``<dir>/.lock``; the revert script does
nothing when the record is already gone, so running both (in any order, or racing) is harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_fault
short_description: Install, revert and list migrator network faults (with a detached expiry revert)
options:
  action: {type: str, required: true, choices: [facts, inject, revert, list]}
  spec: {type: dict}
  ids: {type: list, elements: str, default: []}
  all: {type: bool, default: false}
  dir: {type: str, default: /run/migrator/faults}
"""

TIMER_MARK = "migrator-fault-timer-"
CMD_TIMEOUT = 20
# one JSON line per revert: id, by (ttl | heartbeat | explicit), at
REVERT_LOG = "/run/migrator/fault-reverts.log"
REVERT_LOG_KEEP = 50  # the last lines ``list`` returns


def run(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def interfaces():
    rc, out, _err = run(["ip", "-j", "addr", "show"])
    result = {}
    if rc != 0:
        return result
    try:
        data = json.loads(out or "[]")
    except ValueError:
        return result
    for item in data:
        result[item.get("ifname")] = [
            f"{a.get('local')}/{a.get('prefixlen')}" for a in item.get("addr_info", []) if a.get("local")
        ]
    return result


def ssh_path():
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if len(parts) != 4:
        return None
    return {
        "client": parts[0],
        "client_port": int(parts[1]),
        "server": parts[2],
        "server_port": int(parts[3]),
    }


def records(folder):
    out = []
    if not os.path.isdir(folder):
        return out
    now = time.time()
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            continue
        rec["expired"] = now > float(rec.get("expires_at", 0))
        rec["timer_alive"] = timer_alive(rec)
        out.append(rec)
    return out


def timer_alive(rec):
    pid = rec.get("timer_pid")
    if not isinstance(pid, int):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().decode(errors="replace")
    except OSError:
        return False
    return (TIMER_MARK + str(rec.get("id"))) in cmdline


def revert_script(folder, fid, revert_cmds, log=REVERT_LOG):
    """The revert (run by the timer: ``MIGRATOR_REVERTED_BY`` = ttl or heartbeat; else explicit); it logs
    who reverted the fault and when to ``log``, once, when it really did."""
    lock = shlex.quote(os.path.join(folder, ".lock"))
    record = shlex.quote(os.path.join(folder, f"{fid}.json"))
    lines = [
        "#!/bin/sh",
        f"# migrator fault {fid}: revert (run by the expiry timer or by an explicit revert)",
        f"exec 9>>{lock}",
        "flock -w 60 9 || exit 1",
        f"[ -f {record} ] || exit 0",
    ]
    lines += [shlex.join(argv) + " >/dev/null 2>&1" for argv in revert_cmds]
    script = shlex.quote(os.path.join(folder, f"{fid}.revert.sh"))
    lines.append(f"rm -f {record} {script}")
    quoted_log = shlex.quote(log)
    lines.append(
        f"mkdir -p {shlex.quote(os.path.dirname(log))} && printf "
        + shlex.quote('{"id":"%s","by":"%s","at":%s}\n')
        + f' {shlex.quote(fid)} "${{MIGRATOR_REVERTED_BY:-explicit}}" "$(date +%s)" >> {quoted_log}'
    )
    return "\n".join(lines) + "\n"


def timer_command(ttl, script_path, heartbeat=None, lease=0):
    """The detached dead man's switch: revert at the TTL, or (with a heartbeat file and a lease) as soon
    as the heartbeat is older than ``lease`` seconds (migrator killed, stopped, or its SSH path cut), or
    missing. Polls once a second; bounded by the TTL."""
    script = shlex.quote(script_path)
    if not heartbeat or int(lease) <= 0:
        return f"sleep {int(ttl)}; MIGRATOR_REVERTED_BY=ttl exec sh {script}"
    hb = shlex.quote(heartbeat)
    return (
        f"end=$(( $(date +%s) + {int(ttl)} )); by=ttl; "
        f'while [ "$(date +%s)" -lt "$end" ]; do '
        f"m=$(stat -c %Y {hb} 2>/dev/null || echo 0); "
        f"if [ $(( $(date +%s) - m )) -gt {int(lease)} ]; then by=heartbeat; break; fi; "
        "sleep 1; done; "
        f'MIGRATOR_REVERTED_BY="$by" exec sh {script}'
    )


def revert_log(path=REVERT_LOG, keep=REVERT_LOG_KEEP):
    """The last ``keep`` reverts logged on this node (oldest first)."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()[-keep:]
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class Locked:
    def __init__(self, folder):
        self.path = os.path.join(folder, ".lock")
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a")
        deadline = time.time() + 60
        while True:
            try:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc):
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()


def readback(cmds):
    evidence = {}
    for argv in cmds:
        rc, out, err = run(argv)
        evidence[shlex.join(argv)] = out if rc == 0 else f"rc={rc}: {err.strip()}"
    return evidence


def drift_of(rec, evidence):
    """What the fault left behind, from the readback after a revert."""
    left = []
    meta = rec.get("meta") or {}
    comment = meta.get("comment")
    chain = meta.get("chain")
    handle = meta.get("qdisc_handle")
    text = "\n".join(out for out in evidence.values() if not out.startswith("rc="))
    for pattern in meta.get("absent_after") or []:  # e.g. a link-flap loop still running
        if pattern in text:
            left.append(f"{pattern!r} still in the readback")
    for pattern in meta.get("present_after") or []:  # e.g. the flapped link administratively up
        if pattern not in text:
            left.append(f"{pattern!r} missing from the readback")
    for cmd, out in evidence.items():
        if out.startswith("rc="):
            continue
        if comment and comment in out:
            left.append(f"rule with comment {comment} still present ({cmd})")
        if chain and (f":{chain} " in out or f"-N {chain}" in out):
            left.append(f"chain {chain} still present ({cmd})")
        if handle and cmd.startswith("tc ") and f" {handle} " in out:
            left.append(f"qdisc {handle} still present ({cmd})")
    return left


def stop_timer(rec):
    if timer_alive(rec):
        with contextlib.suppress(OSError):
            os.killpg(int(rec["timer_pid"]), signal.SIGTERM)


def revert_now(folder, rec):
    """Revert a fault while holding the lock (the revert script would wait for it): commands, then files."""
    fid = str(rec.get("id"))
    for argv in rec.get("revert") or []:
        run(argv)
    stop_timer(rec)
    for name in (f"{fid}.json", f"{fid}.revert.sh"):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def do_inject(module, folder, spec):
    fid = str(spec["id"])
    ttl = int(spec["ttl"])
    os.makedirs(folder, mode=0o700, exist_ok=True)
    record_path = os.path.join(folder, f"{fid}.json")
    script_path = os.path.join(folder, f"{fid}.revert.sh")
    failed = None
    # everything under the lock: an expiry revert that fires meanwhile waits, then removes it all
    with Locked(folder):
        if os.path.exists(record_path):
            with open(record_path) as fh:
                rec = json.load(fh)
            if timer_alive(rec):  # already installed by an earlier attempt: idempotent
                return rec, readback(spec.get("readback") or []), {}, False
            revert_now(folder, rec)  # a stale record without its timer: revert it, then install again
        now = time.time()
        rec = {
            "id": fid,
            "kind": spec.get("kind"),
            "node": socket.gethostname(),
            "created_at": now,
            "ttl": ttl,
            "expires_at": now + ttl,
            "install": spec.get("install") or [],
            "revert": spec.get("revert") or [],
            "readback": spec.get("readback") or [],
            "meta": spec.get("meta") or {},
            "timer_pid": None,
            "heartbeat": spec.get("heartbeat") or None,
            "lease": int(spec.get("lease") or 0),
        }
        with open(script_path, "w") as fh:
            fh.write(revert_script(folder, fid, rec["revert"]))
        tmp = record_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(rec, fh)
        os.replace(tmp, record_path)
        # the dead man's switch first: whatever happens next, the timer reverts at expiry
        devnull = open(os.devnull, "r+b")  # noqa: SIM115
        timer = subprocess.Popen(
            ["sh", "-c", timer_command(ttl, script_path, rec["heartbeat"], rec["lease"]), TIMER_MARK + fid],
            stdin=devnull,
            stdout=devnull,
            stderr=devnull,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
        devnull.close()
        rec["timer_pid"] = timer.pid
        with open(tmp, "w") as fh:
            json.dump(rec, fh)
        os.replace(tmp, record_path)
        before = readback(rec["readback"])
        for argv in rec["install"]:
            rc, out, err = run(argv)
            if rc != 0:
                failed = f"{shlex.join(argv)} failed (rc={rc}): {(err or out).strip()}"
                revert_now(folder, rec)  # a failure reverts at once
                break
    if failed:
        module.fail_json(msg=f"fault {fid}: {failed}; reverted", record=rec)
    return rec, readback(rec["readback"]), before, True


def do_revert(folder, ids, everything):
    recs = {r["id"]: r for r in records(folder)}
    wanted = sorted(recs) if everything else [i for i in ids if i]
    reverted, evidence, drift = [], {}, []
    for fid in wanted:
        rec = recs.get(fid)
        script = os.path.join(folder, f"{fid}.revert.sh")
        if rec is None:
            continue  # already reverted (by the timer or an earlier call): nothing to do
        if os.path.exists(script):
            subprocess.run(["sh", script], timeout=CMD_TIMEOUT * 4, check=False, capture_output=True)
        stop_timer(rec)
        ev = readback(rec.get("readback") or [])
        evidence[fid] = ev
        drift += drift_of(rec, ev)
        if os.path.exists(os.path.join(folder, f"{fid}.json")):
            drift.append(f"record {fid}.json still present (revert script failed?)")
        else:
            with contextlib.suppress(OSError):
                os.unlink(script)
        reverted.append(fid)
    return reverted, evidence, drift


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["facts", "inject", "revert", "list"]},
            "spec": {"type": "dict"},
            "ids": {"type": "list", "elements": "str", "default": []},
            "all": {"type": "bool", "default": False},
            "dir": {"type": "str", "default": "/run/migrator/faults"},
        },
        supports_check_mode=True,
    )
    p = module.params
    folder = p["dir"]
    action = p["action"]
    if action == "facts":
        fact = {"interfaces": interfaces(), "ssh": ssh_path(), "faults": records(folder)}
        module.exit_json(changed=False, ansible_facts={"migrator_fault": fact})
    if action == "list":
        fact = {"faults": records(folder), "reverts": revert_log()}
        module.exit_json(changed=False, ansible_facts={"migrator_fault": fact})
    if module.check_mode:
        module.exit_json(changed=False, ansible_facts={"migrator_fault": {"check_mode": True}})
    if action == "inject":
        spec = p["spec"] or {}
        for key in ("id", "ttl"):
            if key not in spec:
                module.fail_json(msg=f"spec.{key} is required")
        rec, evidence, before, changed = do_inject(module, folder, spec)
        module.exit_json(
            changed=changed,
            ansible_facts={"migrator_fault": {"record": rec, "evidence": evidence, "before": before}},
        )
    reverted, evidence, drift = do_revert(folder, p["ids"], p["all"])
    module.exit_json(
        changed=bool(reverted),
        ansible_facts={"migrator_fault": {"reverted": reverted, "evidence": evidence, "drift": drift}},
    )


if __name__ == "__main__":
    main()
