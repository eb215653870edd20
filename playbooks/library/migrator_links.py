#!/usr/bin/python
"""Ansible module: make network interfaces absent by name (``ip link del``). Check mode and diff."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: migrator_links
short_description: Delete network interfaces by name (idempotent, check mode, diff)
options:
  names: {type: list, elements: str, required: true}
  state: {type: str, choices: [absent], default: absent}
"""


def present(module, name):
    rc, _, _ = module.run_command(["ip", "link", "show", "dev", name])
    return rc == 0


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    names = list(dict.fromkeys(module.params["names"]))
    before = [n for n in names if present(module, n)]
    deleted = []
    if not module.check_mode:
        for name in before:
            rc, out, err = module.run_command(["ip", "link", "del", "dev", name])
            if rc != 0 and present(module, name):
                module.fail_json(msg=f"ip link del {name} failed: {(err or out).strip()}", deleted=deleted)
            deleted.append(name)
    else:
        deleted = list(before)
    diff = {
        "before": "".join(n + "\n" for n in before),
        "after": "",
        "before_header": "links",
        "after_header": "links",
    }
    msg = ("deleted: " + ", ".join(deleted)) if deleted else "no such links"
    module.exit_json(changed=bool(before), deleted=deleted, msg=msg, diff=diff)


if __name__ == "__main__":
    main()
