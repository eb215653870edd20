#!/usr/bin/python
"""Ansible module: read-only network facts of a node, set as the fact ``migrator_node_facts``.

Shape::

    {
      "hostname": str,
      "cni": {"dir": str, "exists": bool,
              "files": [{"name", "size", "sha256", "content": <parsed JSON or null>}]},
      "interfaces": [{"name", "kind", "state", "mtu", "mac", "master", "addresses": ["ip/len"],
                      "vxlan": {"id", "port", "local", "dev", "fdb": [{"mac", "dst"}],
                                "neighbors": [{"ip", "mac", "state"}]} | null}],
      "routes": [<objects of `ip -j route show table main`>],
      "iptables": {"available": bool, "error": str | null,
                   "chains": {owner: {table: [chain, ...]}},   # owner: FLANNEL KUBE cali WEAVE CNI MIGRATOR
                                                               #        other
                   "rules": {owner: int},                      # rules inside the owner's chains
                   "jumps": {owner: int},                      # rules elsewhere jumping to them
                   "interface_rules": {ifname: int}},          # rules matching -i/-o ifname (any table)
      "ipsets": {"available": bool, "error": str | null, "names": [str]},   # `ipset list -n`
      "flannel_subnet_env": {KEY: value} | null,               # /run/flannel/subnet.env
      "ip_forward": bool | null,                               # net.ipv4.ip_forward
      "ssh": {"client": ip, "client_port": int, "server": ip, "server_port": int} | null,
                                   # the SSH path migrator uses (a partition must never cut it)
      "errors": [str]                                          # what could not be read
    }
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_node_facts
short_description: Network facts of a node (CNI files, interfaces, routes, iptables chains by owner)
options:
  cni_dir: {type: str, default: /etc/cni/net.d}
  include_cni_content: {type: bool, default: true}
"""

BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}
OWNERS = (
    ("FLANNEL", "FLANNEL"),
    ("KUBE-", "KUBE"),
    ("cali-", "cali"),
    ("WEAVE", "WEAVE"),
    ("CNI-", "CNI"),
    ("MIGRATOR", "MIGRATOR"),
)
TABLES = ("filter", "nat", "mangle", "raw")


def owner_of(chain):
    for prefix, owner in OWNERS:
        if chain.startswith(prefix):
            return owner
    return "other"


def run_json(module, argv):
    rc, out, err = module.run_command(argv)
    if rc != 0:
        return [], (err or out).strip()
    try:
        return json.loads(out or "[]"), None
    except ValueError as exc:
        return [], str(exc)


def cni_files(cni_dir, with_content):
    files = []
    if not os.path.isdir(cni_dir):
        return False, files
    for name in sorted(os.listdir(cni_dir)):
        path = os.path.join(cni_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        entry = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "content": None}
        if with_content:
            try:
                entry["content"] = json.loads(data.decode())
            except ValueError:
                entry["content"] = None
        files.append(entry)
    return True, files


def interfaces(module, errors):
    links, err = run_json(module, ["ip", "-j", "-d", "link", "show"])
    if err:
        errors.append("ip link: " + err)
    addrs, err = run_json(module, ["ip", "-j", "addr", "show"])
    if err:
        errors.append("ip addr: " + err)
    by_name = {}
    for a in addrs:
        by_name[a.get("ifname")] = [
            f"{i.get('local')}/{i.get('prefixlen')}" for i in a.get("addr_info", []) if i.get("local")
        ]
    out = []
    for link in links:
        info = link.get("linkinfo") or {}
        kind = info.get("info_kind") or ("loopback" if link.get("link_type") == "loopback" else "device")
        vxlan = None
        if kind == "vxlan":
            data = info.get("info_data") or {}
            name = link.get("ifname")
            fdb, _ = run_json(module, ["bridge", "-j", "fdb", "show", "dev", name])
            neigh, _ = run_json(module, ["ip", "-j", "neigh", "show", "dev", name])
            vxlan = {
                "id": data.get("id"),
                "port": data.get("port"),
                "local": data.get("local"),
                "dev": data.get("link"),
                "fdb": [{"mac": e.get("mac"), "dst": e.get("dst")} for e in fdb if e.get("dst")],
                "neighbors": [
                    {"ip": e.get("dst"), "mac": e.get("lladdr"), "state": e.get("state")} for e in neigh
                ],
            }
        out.append(
            {
                "name": link.get("ifname"),
                "kind": kind,
                "state": link.get("operstate"),
                "mtu": link.get("mtu"),
                "mac": link.get("address"),
                "master": link.get("master"),
                "addresses": by_name.get(link.get("ifname"), []),
                "vxlan": vxlan,
            }
        )
    return out


def iptables(module):
    facts = {"available": False, "error": None, "chains": {}, "rules": {}, "jumps": {}, "interface_rules": {}}
    binary = module.get_bin_path("iptables-save")
    if binary is None:
        facts["error"] = "iptables-save not found"
        return facts
    facts["available"] = True
    for table in TABLES:
        rc, out, _err = module.run_command([binary, "-t", table])
        if rc != 0:
            continue  # table not present in this kernel
        chains = {}
        rules = []
        for line in out.splitlines():
            if line.startswith(":"):
                name = line[1:].split()[0]
                if name not in BUILTIN:
                    chains[name] = owner_of(name)
            elif line.startswith("-A "):
                rules.append(shlex.split(line))
        for name, owner in chains.items():
            facts["chains"].setdefault(owner, {}).setdefault(table, []).append(name)
        for rule in rules:
            chain = rule[1]
            if chain in chains:
                owner = chains[chain]
                facts["rules"][owner] = facts["rules"].get(owner, 0) + 1
            for ifname in set(rule_interfaces(rule)):
                facts["interface_rules"][ifname] = facts["interface_rules"].get(ifname, 0) + 1
            for flag in ("-j", "-g"):
                if flag in rule:
                    target = rule[rule.index(flag) + 1] if rule.index(flag) + 1 < len(rule) else ""
                    if target in chains and chains.get(chain) != chains[target]:
                        owner = chains[target]
                        facts["jumps"][owner] = facts["jumps"].get(owner, 0) + 1
    return facts


def rule_interfaces(rule):
    """The interfaces a rule (``iptables-save`` words) matches with ``-i``/``-o`` (negated or not)."""
    names = []
    for i, word in enumerate(rule[:-1]):
        if word in ("-i", "-o", "--in-interface", "--out-interface"):
            names.append(rule[i + 1])
    return names


def ipsets(module):
    facts = {"available": False, "error": None, "names": []}
    binary = module.get_bin_path("ipset")
    if binary is None:
        facts["error"] = "ipset not found"
        return facts
    rc, out, err = module.run_command([binary, "list", "-n"])
    if rc != 0:
        facts["error"] = (err or out).strip()
        return facts
    facts["available"] = True
    facts["names"] = sorted(line.strip() for line in out.splitlines() if line.strip())
    return facts


def subnet_env(path="/run/flannel/subnet.env"):
    if not os.path.isfile(path):
        return None
    env = {}
    with open(path) as fh:
        for raw in fh:
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip()
    return env


def ssh_path():
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if len(parts) != 4:
        return None
    client, client_port, server, server_port = parts
    return {
        "client": client,
        "client_port": int(client_port),
        "server": server,
        "server_port": int(server_port),
    }


def ip_forward():
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return None


def main():
    module = AnsibleModule(
        argument_spec={
            "cni_dir": {"type": "str", "default": "/etc/cni/net.d"},
            "include_cni_content": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    errors = []
    exists, files = cni_files(module.params["cni_dir"], module.params["include_cni_content"])
    rc, out, err = module.run_command(["ip", "-j", "route", "show", "table", "main"])
    routes = []
    if rc == 0:
        try:
            routes = json.loads(out or "[]")
        except ValueError as exc:
            errors.append("ip route: " + str(exc))
    else:
        errors.append("ip route: " + err.strip())
    facts = {
        "hostname": socket.gethostname(),
        "cni": {"dir": module.params["cni_dir"], "exists": exists, "files": files},
        "interfaces": interfaces(module, errors),
        "routes": routes,
        "iptables": iptables(module),
        "ipsets": ipsets(module),
        "flannel_subnet_env": subnet_env(),
        "ip_forward": ip_forward(),
        "ssh": ssh_path(),
        "errors": errors,
    }
    module.exit_json(changed=False, ansible_facts={"migrator_node_facts": facts})


if __name__ == "__main__":
    main()
