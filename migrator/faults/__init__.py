"""Network faults on nodes with a dead man's switch (issue 7).

- :mod:`migrator.faults.blast`: blast-radius selection;
- :mod:`migrator.faults.spec`: the exact tc / iptables / ip commands of each fault kind and of its revert
  (:class:`FaultPlan`, built from node facts; pure, used by the dry run too);
- :mod:`migrator.faults.nodes`: running them on nodes through the target's node executor (playbooks
  ``fault-facts.yml``, ``fault-inject.yml``, ``fault-revert.yml``, ``fault-list.yml`` and the module
  ``playbooks/library/migrator_fault.py``, which leaves a record under ``/run/migrator/faults/<id>.json``
  and a detached timer that reverts at expiry even if migrator dies).
"""
