"""The ``CniOps`` port: CNI operations of a live flannel -> Calico migration (``Target.cni``).

The migration actions (``migrator.actions.cni``) use only these methods plus the ``Cluster`` and
``NodeExecutor`` ports. Every mutating method is idempotent. An agent is named by its CNI (``FLANNEL``,
``CALICO``); its DaemonSet is the driver's (:func:`migrator.cni.drivers.agent`). On a real cluster
(``migrator.targets.kube.cni.KubeCniOps``) they map to:

- ``detect_cni``: DaemonSets (all namespaces), the ``kube-flannel-cfg`` ConfigMap (``net-conf.json``),
  node annotations ``flannel.alpha.coreos.com/{backend-data,public-ip}`` and ``spec.podCIDR``,
  Calico ``IPPool`` objects (when the CRD exists). Canal, Weave Net and Cilium are recognised.
- ``apply_cni_agent(FLANNEL, node_selector={MIGRATION_LABEL: "flannel"})``: a patch of the flannel
  DaemonSet's ``spec.template.spec.nodeSelector`` (``None`` removes the key).
  ``apply_cni_agent(CALICO, node_selector, config)``: server-side apply of the user's Calico manifest
  (``config["manifest"]``) with the DaemonSet's node selector set, an ``IPPool`` equal to flannel's
  network (``blockSize`` = the size of the nodes' flannel subnets, ``vxlanMode: Always``, ``natOutgoing``
  = flanneld's ``--ip-masq``), ``FelixConfiguration`` ``vxlanVNI``/``vxlanPort`` = flannel's and
  ``vxlanMTU`` = flannel's MTU - 50 (also calico-node's ``FELIX_VXLANMTU``), one IPAM
  block per node = its flannel pod CIDR, and the ``projectcalico.org/IPv4VXLANTunnelAddr`` /
  ``IPv4VXLANTunnelMACAddr`` node annotations = flannel's VTEP IP/MAC. ``dry_run=True`` is a
  server-side dry run; the returned lines say what would change. With a ``pool`` in the config (the
  dual-overlay install beside Weave Net): calico-node on every node, its CNI config named
  ``cni_conf_name``, an ``IPPool`` for ``pool``, a disabled one for ``nat_exclude`` (the source's range:
  no masquerade to it), Felix's VXLAN port and VNI; nothing of the source is taken over.
- ``delete_cni_agent``: delete the DaemonSet (the agent's node-level leftovers stay: playbooks remove
  them).
- ``cni_agent_ready(agent, node)``: the agent's pod on the node is Ready and the node's kubelet network
  is that CNI (``Node.cni``).
- ``set_calico_mode(node, mode)``: BGP vs VXLAN routing for one node. On a real cluster: the node's
  ``BGPConfiguration``/``IPPool`` change is cluster-wide, so per node it means labelling the node
  ``CALICO_MODE_LABEL`` that the user's per-node ``IPPool`` node selectors use.
- ``resync_cni``: make the agents notice node-level changes done behind their back (the lab
  re-reconciles; a real cluster's agents watch, so it is a no-op there).
- ``cluster_cidr`` / ``set_cluster_cidr``: kube-proxy's cluster CIDR (``clusterCIDR`` in the
  ``kube-system/kube-proxy`` ConfigMap's ``config.conf``; kube-proxy masquerades traffic to a ClusterIP
  from outside it). While two overlays run (the dual-overlay migration) it must hold both pod ranges, else
  a pod of the new range reaching a Service is seen by its endpoint as the node, and NetworkPolicy cannot
  tell the pods apart. Setting it restarts kube-proxy (a DaemonSet rollout on a real cluster).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from migrator.cni.info import CalicoMode, CniInfo, CniKind


class CniOps(Protocol):
    def detect_cni(self) -> CniInfo: ...

    def apply_cni_agent(
        self,
        agent: CniKind,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Create or update the agent's DaemonSet with this node selector (``None``/empty: every node) and
        config (calico-node: ``mode`` vxlan|bgp, ``peering`` full-mesh|route-reflector, ``reflectors``,
        ``manifest``). Returns what was (or, with ``dry_run``, would be) changed, as readable lines."""
        ...

    def delete_cni_agent(self, agent: CniKind, *, dry_run: bool = False) -> list[str]:
        """Delete the agent's DaemonSet and its pods (no-op when absent)."""
        ...

    def cni_agent_ready(self, agent: CniKind, node: str) -> tuple[bool, str]:
        """(ready, reason): the agent's pod on ``node`` runs and is ready."""
        ...

    def set_calico_mode(self, node: str, mode: CalicoMode | None) -> None:
        """Route this node's pod traffic over VXLAN or BGP (``None``: the DaemonSet's default)."""
        ...

    def resync_cni(self) -> None:
        """Let the CNI agents re-read the nodes (after a playbook removed devices)."""
        ...

    def cluster_cidr(self) -> str | None:
        """kube-proxy's cluster CIDR (``None`` when not set or not known)."""
        ...

    def set_cluster_cidr(self, cidr: str | None, *, dry_run: bool = False) -> list[str]:
        """Set kube-proxy's cluster CIDR (``None``: unset) and restart kube-proxy; what changed, as lines."""
        ...
