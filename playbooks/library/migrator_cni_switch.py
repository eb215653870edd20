#!/usr/bin/python
"""Ansible module: one node's side of a live CNI switch in ONE task (one SSH round trip, one Python start).

In this order: install the blocking CNI config (``blocking_file``: sorted first, its plugin does not exist,
so the kubelet wires no pod while the node is between two CNIs); fail on purpose when ``fail`` is true
(after the blocking config is in place: tests the automatic rollback); delete the old CNI's interfaces,
its iptables chains with the rules jumping to them and, with ``rule_interfaces``, the rules elsewhere that
match those interfaces with ``-i``/``-o`` (Weave Net's FORWARD accepts on its bridge; one ``iptables-save``
per family for all tables), its ipsets (``ipset_prefixes``, after the rules using them are gone), its
config files in ``cni_dir`` and its other files. With ``state: unblocked`` it only removes the blocking
config (the end of the switch, once the new CNI is ready).

Idempotent. Check mode changes nothing and returns one diff per part that would change (the blocking
file's content, the links, the chains and jump rules, the files), like the tasks of ``cni-teardown.yml``.
"""

from __future__ import annotations

import os
import shlex

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_cni_switch
short_description: Blocking CNI config + old CNI teardown in one task (idempotent, check mode, diff)
options:
  state: {type: str, choices: [switching, unblocked], default: switching}
  cni_dir: {type: path, default: /etc/cni/net.d}
  blocking_file: {type: str, default: 00-migrator-blocking.conflist}
  blocking_content: {type: str}
  fail: {type: bool, default: false}
  fail_msg: {type: str, default: failure injected (fail_at_node)}
  links: {type: list, elements: str, default: []}
  chain_prefixes: {type: list, elements: str, default: []}
  rule_interfaces: {type: list, elements: str, default: []}
  ipset_prefixes: {type: list, elements: str, default: []}
  tables: {type: list, elements: str, default: [filter, nat, mangle, raw]}
  families: {type: list, elements: str, default: [ipv4], choices: [ipv4, ipv6]}
  cni_files: {type: list, elements: str, default: []}
  extra_files: {type: list, elements: str, default: []}
"""

BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}
IFACE_FLAGS = ("-i", "-o", "--in-interface", "--out-interface")
BLOCKING = """{
  "cniVersion": "0.3.1",
  "name": "migrator-blocking",
  "plugins": [{"type": "migrator-cni-switch-in-progress"}]
}
"""


def _diff(header, before, after):
    return {"before": before, "after": after, "before_header": header, "after_header": header}


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write(module, path, content):
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    tmp = f"{path}.migrator-tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        module.fail_json(msg=f"cannot write {path}: {exc}")


def _remove(module, path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        module.fail_json(msg=f"cannot remove {path}: {exc}")


def _links(module, names):
    """The interfaces of ``names`` present on the node (one ``ip -o link show``)."""
    if not names:
        return []
    rc, out, err = module.run_command(["ip", "-o", "link", "show"])
    if rc != 0:
        module.fail_json(msg=f"ip link show failed: {(err or out).strip()}")
    present = set()
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            present.add(parts[1].strip().split("@", 1)[0])
    return [n for n in names if n in present]


def _names_interface(argv, interfaces):
    """Whether a rule (``iptables-save`` words) matches one of ``interfaces`` with ``-i``/``-o``."""
    return any(w in IFACE_FLAGS and argv[i + 1] in interfaces for i, w in enumerate(argv[:-1]))


def _chain_plan(save_out, tables, prefixes, interfaces=()):
    """``[(table, chains, rules to delete)]`` from one ``iptables-save`` of all tables: the matching chains,
    the rules elsewhere jumping to them or naming ``interfaces``."""
    by_table = {}
    table = None
    for line in save_out.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            by_table[table] = ([], [])
        elif table is None:
            continue
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name not in BUILTIN and any(name.startswith(p) for p in prefixes):
                by_table[table][0].append(name)
        elif line.startswith("-A "):
            by_table[table][1].append(line)
    plan = []
    for name in tables:
        chains, rules = by_table.get(name, ([], []))
        wanted = set(chains)
        jumps = []
        for line in rules:
            argv = shlex.split(line)
            if argv[1] in wanted:
                continue  # flushed with its chain
            if interfaces and _names_interface(argv, interfaces):
                jumps.append(line)
                continue
            for flag in ("-j", "-g", "--jump", "--goto"):
                if flag in argv and argv.index(flag) + 1 < len(argv) and argv[argv.index(flag) + 1] in wanted:
                    jumps.append(line)
                    break
        if chains or jumps:
            plan.append((name, chains, jumps))
    return plan


def _chains(module, families, tables, prefixes, interfaces):
    """``[(family, tool, table, chains, jumps)]`` to remove."""
    out = []
    if not prefixes and not interfaces:
        return out
    for family in families:
        tool = "iptables" if family == "ipv4" else "ip6tables"
        bin_ = module.get_bin_path(tool)
        save_bin = module.get_bin_path(tool + "-save")
        if bin_ is None or save_bin is None:
            module.fail_json(msg=f"{tool} / {tool}-save not found on the node")
        rc, save_out, err = module.run_command([save_bin])
        if rc != 0:
            module.fail_json(msg=f"{tool}-save failed: {(err or save_out).strip()}")
        for table, chains, jumps in _chain_plan(save_out, tables, prefixes, interfaces):
            out.append((family, bin_, table, chains, jumps))
    return out


def _remove_chains(module, bin_, table, chains, jumps):
    for line in jumps:
        argv = shlex.split(line)
        argv[0] = "-D"
        rc, out, err = module.run_command([bin_, "-w", "5", "-t", table, *argv])
        if rc != 0:
            module.fail_json(msg=f"{bin_} -t {table} {shlex.join(argv)} failed: {(err or out).strip()}")
    for verb in ("-F", "-X"):
        for chain in chains:
            rc, out, err = module.run_command([bin_, "-w", "5", "-t", table, verb, chain])
            if rc != 0:
                module.fail_json(msg=f"{bin_} -t {table} {verb} {chain} failed: {(err or out).strip()}")


def _ipsets(module, prefixes):
    """The ipsets whose names start with one of ``prefixes`` (one ``ipset list -n``; none without ipset)."""
    if not prefixes or module.get_bin_path("ipset") is None:
        return []
    rc, out, err = module.run_command(["ipset", "list", "-n"])
    if rc != 0:
        module.fail_json(msg=f"ipset list -n failed: {(err or out).strip()}")
    return sorted(n.strip() for n in out.splitlines() if n.strip().startswith(prefixes))


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["switching", "unblocked"], "default": "switching"},
            "cni_dir": {"type": "path", "default": "/etc/cni/net.d"},
            "blocking_file": {"type": "str", "default": "00-migrator-blocking.conflist"},
            "blocking_content": {"type": "str"},
            "fail": {"type": "bool", "default": False},
            "fail_msg": {"type": "str", "default": "failure injected (fail_at_node)"},
            "links": {"type": "list", "elements": "str", "default": []},
            "chain_prefixes": {"type": "list", "elements": "str", "default": []},
            "rule_interfaces": {"type": "list", "elements": "str", "default": []},
            "ipset_prefixes": {"type": "list", "elements": "str", "default": []},
            "tables": {"type": "list", "elements": "str", "default": ["filter", "nat", "mangle", "raw"]},
            "families": {"type": "list", "elements": "str", "default": ["ipv4"], "choices": ["ipv4", "ipv6"]},
            "cni_files": {"type": "list", "elements": "str", "default": []},
            "extra_files": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    cni_dir = p["cni_dir"]
    for name in [p["blocking_file"], *p["cni_files"]]:
        if not name or "/" in name:
            module.fail_json(msg=f"{name!r}: CNI file names are names inside cni_dir, without '/'")
    for path in p["extra_files"]:
        if not path.startswith("/"):
            module.fail_json(msg=f"{path!r}: extra_files must be absolute paths")
    blocking = os.path.join(cni_dir, p["blocking_file"])
    diffs = []
    done = []
    current = _read(blocking)

    if p["state"] == "unblocked":
        if current is not None:
            diffs.append(_diff(blocking, current, ""))
            if not check:
                _remove(module, blocking)
            done.append(f"removed {blocking}")
        module.exit_json(changed=bool(diffs), msg="; ".join(done) or "not blocked", diff=diffs, done=done)

    # 1. the blocking config (nothing else happens when it cannot be written)
    content = p["blocking_content"] if p["blocking_content"] is not None else BLOCKING
    if current != content:
        diffs.append(_diff(blocking, current or "", content))
        if not check:
            _write(module, blocking, content)
        done.append(f"installed {blocking}")
    # 2. the injected failure, with the node blocked
    if p["fail"]:
        module.fail_json(msg=p["fail_msg"], changed=bool(diffs), diff=diffs, done=done)
    # 3. the old CNI's interfaces
    links = _links(module, list(dict.fromkeys(p["links"])))
    if links:
        diffs.append(_diff("links", "".join(n + "\n" for n in links), ""))
        if not check:
            for name in links:
                rc, out, err = module.run_command(["ip", "link", "del", "dev", name])
                if rc != 0 and _links(module, [name]):
                    module.fail_json(msg=f"ip link del {name} failed: {(err or out).strip()}", done=done)
        done.append("deleted links: " + ", ".join(links))
    # 4. its iptables chains, with the rules that jump to them
    prefixes = [x for x in p["chain_prefixes"] if x]
    interfaces = [x for x in p["rule_interfaces"] if x]
    chain_plan = _chains(module, p["families"], p["tables"], prefixes, interfaces)
    if chain_plan:
        lines = []
        for family, bin_, table, chains, jumps in chain_plan:
            lines += [f"{family} {table}: {j}" for j in jumps]
            lines += [f"{family} {table}: chain {c}" for c in chains]
            if not check:
                _remove_chains(module, bin_, table, chains, jumps)
        diffs.append(_diff("iptables chains and jump rules", "".join(x + "\n" for x in lines), ""))
        done.append(
            "removed chains: "
            + ", ".join(f"{f}/{t}/{c}" for f, _, t, chains, _ in chain_plan for c in chains)
        )
    # 5. its ipsets (the rules matching them are gone)
    sets = _ipsets(module, tuple(x for x in p["ipset_prefixes"] if x))
    if sets:
        diffs.append(_diff("ipsets", "".join(n + "\n" for n in sets), ""))
        if not check:
            for name in sets:
                rc, out, err = module.run_command(["ipset", "destroy", name])
                if rc != 0:
                    module.fail_json(msg=f"ipset destroy {name} failed: {(err or out).strip()}", done=done)
        done.append("destroyed ipsets: " + ", ".join(sets))
    # 6. its files
    paths = [os.path.join(cni_dir, n) for n in p["cni_files"]] + list(p["extra_files"])
    for path in dict.fromkeys(paths):
        if os.path.lexists(path):
            diffs.append(_diff(path, f"{path}\n", ""))
            if not check:
                _remove(module, path)
            done.append(f"removed {path}")
    module.exit_json(changed=bool(diffs), msg="; ".join(done) or "nothing to do", diff=diffs, done=done)


if __name__ == "__main__":
    main()
