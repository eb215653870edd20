"""A fake flannel cluster to test and measure the Kubernetes target: the seeded API, the Calico manifest
that ``plans/flannel-to-calico.yaml`` installs, and the fake API server in a process of its own.

Shared by ``bench/kube_scale.py``, ``bench/kube_plan_scale.py`` and ``tests/kube/test_kube_plan_dry_run.py``.
``python -m migrator.testing.kube_cluster --nodes N --kubeconfig PATH`` serves one on 127.0.0.1
(it writes the URL on its first output line) until its stdin closes.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, seed_flannel_cluster

ROOT = Path(__file__).resolve().parents[2]

#: A small Calico manifest (a CRD, calico-node's ServiceAccount and DaemonSet): enough for the install
#: stage's server-side dry run to have something to apply.
CALICO_MANIFEST = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: felixconfigurations.crd.projectcalico.org}
spec:
  group: crd.projectcalico.org
  scope: Cluster
  names:
    kind: FelixConfiguration
    plural: felixconfigurations
    singular: felixconfiguration
    listKind: FelixConfigurationList
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system, labels: {k8s-app: calico-node}}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      hostNetwork: true
      containers: [{name: calico-node, image: "docker.io/calico/node:v3.27.0"}]
"""


def calico_node_daemonset(
    *,
    image: str | None = None,
    node_selector: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A fresh copy of calico-node's DaemonSet of :data:`CALICO_MANIFEST` (for tests that apply their own
    Calico objects), with another ``image``, a pod ``nodeSelector`` or container ``env`` if given."""
    daemonset: dict[str, Any] = next(
        d for d in yaml.safe_load_all(CALICO_MANIFEST) if d["kind"] == "DaemonSet"
    )
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if image is not None:
        container["image"] = image
    if node_selector is not None:
        pod["nodeSelector"] = dict(node_selector)
    if env is not None:
        container["env"] = [{"name": name, "value": value} for name, value in env.items()]
    return daemonset


def write_calico_manifest(path: Path) -> Path:
    path.write_text(CALICO_MANIFEST)
    return path


def flannel_api(
    nodes: int, *, control_planes: int = 3, pods_per_node: int = 2, quiet: bool = False
) -> FakeKubeApi:
    """A flannel cluster of ``nodes`` nodes (``control_planes`` of them control plane, named first);
    every node runs its kube-flannel pod and each worker ``pods_per_node - 1`` app pods under a PDB.

    ``quiet``: no request log and no controllers (large seeds for benchmarks)."""
    api = FakeKubeApi()
    if quiet:
        api.record_requests = False
        api.controllers_enabled = False
    seed_flannel_cluster(
        api,
        workers=nodes - control_planes,
        control_planes=control_planes,
        app_pods_per_node=max(pods_per_node - 1, 0),
    )
    return api


class FakeClusterProcess:
    """The fake API server with a quiet :func:`flannel_api` cluster in a child process; a context manager.

    Entering starts it and waits for its URL (:attr:`url`, :attr:`build_seconds`); the kubeconfig is
    written at ``kubeconfig``. Leaving closes the child's stdin, which stops it. A watchdog kills it after
    ``lifetime`` seconds whatever happens, so no server is ever left behind.
    """

    def __init__(
        self, nodes: int, kubeconfig: Path, *, pods_per_node: int = 4, lifetime: float = 1800.0
    ) -> None:
        self.nodes = nodes
        self.pods_per_node = pods_per_node
        self.kubeconfig = kubeconfig
        self.lifetime = lifetime
        self.url = ""
        self.build_seconds = 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._watchdog: threading.Timer | None = None

    def __enter__(self) -> FakeClusterProcess:
        started = time.perf_counter()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                __name__,
                "--nodes",
                str(self.nodes),
                "--pods-per-node",
                str(self.pods_per_node),
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._watchdog = threading.Timer(self.lifetime, self._proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        assert self._proc.stdout is not None
        url = self._proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake API server did not start (it said {url!r})")
        self.url = url
        self.build_seconds = time.perf_counter() - started
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (Linux ``/proc``; ``None`` elsewhere)."""
        if self._proc is None:
            return None
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if self._watchdog is not None:
            self._watchdog.cancel()
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def serve(nodes: int, pods_per_node: int, kubeconfig: Path) -> None:
    """Serve a quiet :func:`flannel_api` cluster; write the URL on stdout; return when stdin closes."""
    api = flannel_api(nodes, pods_per_node=pods_per_node, quiet=True)
    # the seeded objects live as long as the server: keep the cyclic garbage collector from traversing
    # them again and again while it serves (it stands in for a real API server, whose speed is not measured)
    gc.collect()
    gc.freeze()
    with FakeApiServer(api) as server:
        server.write_kubeconfig(kubeconfig, token="bench")  # noqa: S106 - the fake server's token
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes our stdin (or dies)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.nodes, args.pods_per_node, args.kubeconfig)


if __name__ == "__main__":
    main()
