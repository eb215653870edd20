"""Ansible callback plugins that migrator enables for its own playbook runs (``ANSIBLE_CALLBACK_PLUGINS``
points at this folder; see :mod:`migrator.targets.ansible.executor`)."""
