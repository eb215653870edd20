"""Cluster DNS: a real dnsmasq per ``kube-system/coredns`` pod, answering ``<svc>.<ns>.svc.cluster.local``.

dnsmasq serves the Services from an ``addn-hosts`` file (re-read on SIGHUP), answers only for the cluster
domain (``--local``) and has no upstream, so nothing leaves the lab. Pods reach it through the
``kube-dns`` ClusterIP (10.96.0.10) like any other Service, and get a ``resolv.conf`` through
``/etc/netns/<pod netns>/resolv.conf``, which ``ip netns exec`` bind-mounts over ``/etc/resolv.conf``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from migrator.lab.spec import CLUSTER_DOMAIN, DNS_SERVICE_IP
from migrator.lab.state import ServiceState

DNSMASQ = "/usr/sbin/dnsmasq"


def hosts_file(services: Iterable[ServiceState]) -> str:
    lines = [
        f"{s.cluster_ip} {s.name}.{s.namespace}.svc.{CLUSTER_DOMAIN}"
        for s in sorted(services, key=lambda s: (s.namespace, s.name))
    ]
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str, nameserver: str = DNS_SERVICE_IP) -> str:
    return (
        f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        f"nameserver {nameserver}\n"
        "options ndots:5 timeout:1 attempts:2\n"
    )


def dnsmasq_argv(hosts: Path, port: int = 53) -> list[str]:
    return [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--addn-hosts={hosts}",
        f"--local=/{CLUSTER_DOMAIN}/",
        "--domain-needed",
        "--bogus-priv",
        f"--port={port}",
        "--user=root",
        "--group=root",
        "--pid-file=",
        "--log-facility=-",
    ]
