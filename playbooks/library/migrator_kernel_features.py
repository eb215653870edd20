#!/usr/bin/python
"""Ansible module: which kernel network features a node has, set as the fact ``migrator_kernel_features``.

Probes on throw-away objects only: a veth pair ``mgp<pid>a``/``mgp<pid>b`` that is attached to nothing
(qdisc kinds are tried on it), throw-away links of each kind, and an iptables chain ``MIGRATOR-PROBE-<pid>``;
all are deleted before the module returns. Nothing else on the node is touched, so the task runs in check
mode too.

Fact shape: ``{"qdisc": {"netem": bool, "tbf": bool, "htb": bool}, "link": {"vxlan": bool, "ipip": bool,
"bridge": bool, "dummy": bool}, "ipvs": bool, "iptables": {"statistic": bool, "comment": bool},
"errors": {feature: message}}`` (``errors`` holds the kernel's message for each missing feature).
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_kernel_features
short_description: Probe kernel network features (netem, tbf, htb, vxlan, ipip, IPVS, iptables matches)
options: {}
"""

QDISCS = {
    "netem": ["netem", "delay", "1ms"],
    "tbf": ["tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms"],
    "htb": ["htb", "default", "10"],
}


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    tag = f"mgp{os.getpid() % 10_000_000}"
    errors = {}
    facts = {
        "qdisc": {},
        "link": {},
        "ipvs": os.path.exists("/proc/net/ip_vs"),
        "iptables": {},
        "errors": errors,
    }

    def run(argv):
        rc, out, err = module.run_command(argv)
        return rc == 0, (err or out).strip()

    ok, msg = run(["ip", "link", "add", tag + "a", "type", "veth", "peer", "name", tag + "b"])
    try:
        for kind, args in QDISCS.items():
            if not ok:
                facts["qdisc"][kind] = False
                errors["qdisc/" + kind] = "cannot create a probe veth: " + msg
                continue
            good, why = run(["tc", "qdisc", "add", "dev", tag + "a", "root", *args])
            facts["qdisc"][kind] = good
            if good:
                run(["tc", "qdisc", "del", "dev", tag + "a", "root"])
            else:
                errors["qdisc/" + kind] = why
    finally:
        if ok:
            run(["ip", "link", "del", tag + "a"])

    links = {
        "vxlan": ["vxlan", "id", "4242", "dstport", "4789"],
        "ipip": ["ipip"],
        "bridge": ["bridge"],
        "dummy": ["dummy"],
    }
    for kind, args in links.items():
        name = tag + kind[:2]
        good, why = run(["ip", "link", "add", name, "type", *args])
        facts["link"][kind] = good
        if good:
            run(["ip", "link", "del", name])
        else:
            errors["link/" + kind] = why

    chain = f"MIGRATOR-PROBE-{os.getpid() % 10_000_000}"
    created, why = run(["iptables", "-w", "5", "-N", chain])
    try:
        for match, args in (
            ("statistic", ["-m", "statistic", "--mode", "random", "--probability", "0.5"]),
            ("comment", ["-m", "comment", "--comment", "probe"]),
        ):
            if not created:
                facts["iptables"][match] = False
                errors["iptables/" + match] = why
                continue
            good, msg = run(["iptables", "-w", "5", "-A", chain, *args, "-j", "RETURN"])
            facts["iptables"][match] = good
            if not good:
                errors["iptables/" + match] = msg
    finally:
        if created:
            run(["iptables", "-w", "5", "-F", chain])
            run(["iptables", "-w", "5", "-X", chain])
    module.exit_json(changed=False, ansible_facts={"migrator_kernel_features": facts})


if __name__ == "__main__":
    main()
