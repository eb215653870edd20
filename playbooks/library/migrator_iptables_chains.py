#!/usr/bin/python
"""Ansible module: remove iptables chains by name prefix, with the rules that jump to them.

For each table: rules in other chains whose ``-j``/``-g`` target is a matching chain are deleted, and with
``interfaces`` also the rules in other chains that match one of those interfaces with ``-i``/``-o`` (Weave
Net's FORWARD accepts on its bridge); then the matching chains are flushed and deleted. Built-in chains are
never deleted. Check mode and diff.
"""

from __future__ import annotations

import shlex

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_iptables_chains
short_description: Remove iptables chains by prefix, with their jump rules (idempotent, check mode, diff)
options:
  prefixes: {type: list, elements: str, required: true}
  interfaces: {type: list, elements: str, default: []}
  tables: {type: list, elements: str, default: [filter, nat, mangle, raw]}
  families: {type: list, elements: str, default: [ipv4], choices: [ipv4, ipv6]}
  state: {type: str, choices: [absent], default: absent}
"""

BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


IFACE_FLAGS = ("-i", "-o", "--in-interface", "--out-interface")


def names_interface(argv, interfaces):
    """Whether a rule (``iptables-save`` words) matches one of ``interfaces`` with ``-i``/``-o``."""
    return any(w in IFACE_FLAGS and argv[i + 1] in interfaces for i, w in enumerate(argv[:-1]))


def plan(module, save_bin, table, prefixes, interfaces=()):
    """(chains, rules) to remove from ``table``: the matching chains, the rules elsewhere jumping to them
    or naming ``interfaces``; ([], []) when the table does not exist."""
    rc, out, _ = module.run_command([save_bin, "-t", table])
    if rc != 0:
        return [], []
    chains = []
    rules = []
    for line in out.splitlines():
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name not in BUILTIN and any(name.startswith(p) for p in prefixes):
                chains.append(name)
        elif line.startswith("-A "):
            rules.append(line)
    wanted = set(chains)
    jumps = []
    for line in rules:
        argv = shlex.split(line)
        if argv[1] in wanted:
            continue  # flushed with its chain
        if interfaces and names_interface(argv, interfaces):
            jumps.append(line)
            continue
        for flag in ("-j", "-g", "--jump", "--goto"):
            if flag in argv and argv.index(flag) + 1 < len(argv) and argv[argv.index(flag) + 1] in wanted:
                jumps.append(line)
                break
    return chains, jumps


def main():
    module = AnsibleModule(
        argument_spec={
            "prefixes": {"type": "list", "elements": "str", "required": True},
            "interfaces": {"type": "list", "elements": "str", "default": []},
            "tables": {"type": "list", "elements": "str", "default": ["filter", "nat", "mangle", "raw"]},
            "families": {"type": "list", "elements": "str", "default": ["ipv4"], "choices": ["ipv4", "ipv6"]},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    prefixes = [p for p in module.params["prefixes"] if p]
    interfaces = [i for i in module.params["interfaces"] if i]
    if not prefixes and not interfaces:
        module.fail_json(msg="prefixes must hold at least one non-empty prefix (or give interfaces)")
    removed = []
    before_lines = []
    for family in module.params["families"]:
        tool = "iptables" if family == "ipv4" else "ip6tables"
        bin_ = module.get_bin_path(tool)
        save_bin = module.get_bin_path(tool + "-save")
        if bin_ is None or save_bin is None:
            module.fail_json(msg=f"{tool} / {tool}-save not found on the node")
        for table in module.params["tables"]:
            chains, jumps = plan(module, save_bin, table, prefixes, interfaces)
            before_lines += [f"{family} {table}: {j}" for j in jumps]
            before_lines += [f"{family} {table}: chain {c}" for c in chains]
            if module.check_mode:
                removed += [f"{family}/{table}/{c}" for c in chains]
                continue
            for line in jumps:
                argv = shlex.split(line)
                argv[0] = "-D"
                rc, out, err = module.run_command([bin_, "-w", "5", "-t", table, *argv])
                if rc != 0:
                    detail = (err or out).strip()
                    module.fail_json(msg=f"{tool} -t {table} {shlex.join(argv)} failed: {detail}")
            for verb in ("-F", "-X"):
                for chain in chains:
                    rc, out, err = module.run_command([bin_, "-w", "5", "-t", table, verb, chain])
                    if rc != 0:
                        detail = (err or out).strip()
                        module.fail_json(msg=f"{tool} -t {table} {verb} {chain} failed: {detail}")
            removed += [f"{family}/{table}/{c}" for c in chains]
    header = "iptables chains and jump rules"
    diff = {
        "before": "".join(line + "\n" for line in before_lines),
        "after": "",
        "before_header": header,
        "after_header": header,
    }
    msg = ("removed chains: " + ", ".join(removed)) if removed else "no matching chains"
    module.exit_json(changed=bool(before_lines), removed=removed, msg=msg, diff=diff)


if __name__ == "__main__":
    main()
