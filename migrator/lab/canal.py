"""An emulated Canal (``--cni canal``): flannel's VXLAN network with Calico's felix for policy.

Canal's DaemonSet ``kube-system/canal`` runs two containers on every node (Calico v3.31's ``canal.yaml``):
``kube-flannel`` (flanneld ``--ip-masq --kube-subnet-mgr``: ``flannel.1``, VNI 1, UDP 8472, the
``FLANNEL-*`` chains, ``/run/flannel/subnet.env``, exactly as :mod:`migrator.lab.flannel`) and
``calico-node`` with ``CALICO_NETWORKING_BACKEND=none`` (felix: policy only, no routing). Its install-cni
writes ``/etc/cni/net.d/10-canal.conflist``: the ``calico`` CNI plugin with host-local IPAM on the node's
pod CIDR (``usePodCidr``), which wires each pod with a veth and a /32 host route (no ``cni0`` bridge); the
lab uses the real ``ptp`` plugin for that, as for Calico (:mod:`migrator.lab.calico`). The network is named
``k8s-pod-network``, as Calico's: the file name tells them apart.
"""

from __future__ import annotations

import json
from typing import Any

from migrator.lab import calico

CONFLIST_NAME = "10-canal.conflist"


def conflist(pod_cidr: str) -> dict[str, Any]:
    return calico.conflist(pod_cidr)


def conflist_text(pod_cidr: str) -> str:
    return json.dumps(conflist(pod_cidr), indent=2) + "\n"
