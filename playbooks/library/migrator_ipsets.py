#!/usr/bin/python
"""Ansible module: destroy ipsets by name prefix (``ipset destroy``). Check mode and diff.

Run it after the iptables rules that match the sets are gone: the kernel refuses to destroy a set in use,
and the module fails naming the set.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_ipsets
short_description: Destroy ipsets whose names start with a prefix (idempotent, check mode, diff)
options:
  prefixes: {type: list, elements: str, required: true}
  state: {type: str, choices: [absent], default: absent}
"""


def main():
    module = AnsibleModule(
        argument_spec={
            "prefixes": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    prefixes = tuple(p for p in module.params["prefixes"] if p)
    if not prefixes:
        module.fail_json(msg="prefixes must hold at least one non-empty prefix")
    binary = module.get_bin_path("ipset")
    if binary is None:
        module.exit_json(changed=False, destroyed=[], msg="ipset is not installed: no ipsets")
    rc, out, err = module.run_command([binary, "list", "-n"])
    if rc != 0:
        module.fail_json(msg=f"ipset list -n failed: {(err or out).strip()}")
    before = sorted(n.strip() for n in out.splitlines() if n.strip().startswith(prefixes))
    destroyed = []
    for name in before:
        if not module.check_mode:
            rc, out, err = module.run_command([binary, "destroy", name])
            if rc != 0:
                detail = (err or out).strip()
                module.fail_json(msg=f"ipset destroy {name} failed: {detail}", destroyed=destroyed)
        destroyed.append(name)
    diff = {
        "before": "".join(n + "\n" for n in before),
        "after": "",
        "before_header": "ipsets",
        "after_header": "ipsets",
    }
    msg = ("destroyed: " + ", ".join(destroyed)) if destroyed else "no matching ipsets"
    module.exit_json(changed=bool(before), destroyed=destroyed, msg=msg, diff=diff)


if __name__ == "__main__":
    main()
