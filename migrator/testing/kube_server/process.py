"""The fake API server with a seeded flannel cluster in a process of its own (loopback only), so that
what is measured (migrator) and what stands in for the cluster do not share an interpreter.

``python -m migrator.testing.kube_server --nodes N --kubeconfig PATH [--manifest FILE]...`` serves one on
127.0.0.1 (plus the objects of the YAML manifests, e.g. NetworkPolicies: :func:`.seed.seed_manifests`): it
writes the URL on its first output line and serves until its stdin closes. :class:`FakeClusterProcess` starts
and stops one (``bench/kube_scale.py``, ``bench/kube_plan_scale.py``, the kube dry-run tests).
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

from migrator.testing.kube_server.http import FakeApiServer
from migrator.testing.kube_server.seed import flannel_api, seed_manifests

ROOT = Path(__file__).resolve().parents[3]


class FakeClusterProcess:
    """The fake API server with a quiet :func:`flannel_api` cluster in a child process; a context manager.

    Entering starts it and waits for its URL (:attr:`url`, :attr:`build_seconds`); the kubeconfig is
    written at ``kubeconfig``. Leaving closes the child's stdin, which stops it. A watchdog kills it after
    ``lifetime`` seconds whatever happens, so no server is ever left behind.
    """

    def __init__(
        self,
        nodes: int,
        kubeconfig: Path,
        *,
        pods_per_node: int = 4,
        lifetime: float = 1800.0,
        manifests: tuple[Path, ...] = (),
    ) -> None:
        self.nodes = nodes
        self.manifests = manifests
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
                "migrator.testing.kube_server",
                "--nodes",
                str(self.nodes),
                "--pods-per-node",
                str(self.pods_per_node),
                "--kubeconfig",
                str(self.kubeconfig),
                *(arg for path in self.manifests for arg in ("--manifest", str(path))),
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


def serve(nodes: int, pods_per_node: int, kubeconfig: Path, manifests: tuple[Path, ...] = ()) -> None:
    """Serve a quiet :func:`flannel_api` cluster (plus ``manifests``); write the URL on stdout; return
    when stdin closes."""
    api = flannel_api(nodes, pods_per_node=pods_per_node, quiet=True)
    if manifests:
        seed_manifests(api, *manifests)
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
    parser = argparse.ArgumentParser(prog="python -m migrator.testing.kube_server", description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, action="append", default=[], help="YAML objects to seed")
    args = parser.parse_args(argv)
    serve(args.nodes, args.pods_per_node, args.kubeconfig, tuple(args.manifest))
