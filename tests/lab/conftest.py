"""Fixtures for the lab tests: a real lab with a unique name, always torn down."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec, lab_prefix
from migrator.lab.state import LabState
from tests.lab.netpol_probe import policy_doc, write_docs

CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``lab`` build real labs: skip them without root, iproute2 or the CNI plugins."""
    if CAN_BUILD_LAB:
        return
    skip = pytest.mark.skip(reason="needs root, iproute2 and containernetworking-plugins")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def unique_lab(tag: str) -> tuple[str, str]:
    """A lab name starting with 't' and an underlay /24 in 198.18.100-199 (away from the user's default)."""
    rnd = random.Random(f"{os.getpid()}-{tag}-{os.urandom(4).hex()}")
    name = f"t{tag}{rnd.randrange(100, 999)}"
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, timeout=10, check=False).stdout
    third = rnd.randrange(100, 200)
    for _ in range(100):  # skip underlays already in use (the session lab, another lab)
        if f"198.18.{third}.0/24" not in routes:
            break
        third = 100 + (third - 99) % 100
    return name, f"198.18.{third}.0/24"


@pytest.fixture(scope="session", autouse=True)
def migrator_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("migrator-home")
    old = os.environ.get("MIGRATOR_HOME")
    os.environ["MIGRATOR_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MIGRATOR_HOME", None)
    else:
        os.environ["MIGRATOR_HOME"] = old


@pytest.fixture(scope="session")
def lab(migrator_home: Path) -> Iterator[Lab]:
    """A 4-node flannel lab with bookinfo and one echo pod per node, for the whole session."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name, underlay = unique_lab("s")
    the_lab = Lab(name)
    try:
        the_lab.up(LabSpec(name=name, nodes=4, pods_per_node=1, underlay=underlay))
        yield the_lab
    finally:
        res = the_lab.down()
        assert not res.leftovers, res.leftovers


@pytest.fixture()
def state(lab: Lab) -> LabState:
    return lab.require()


NETPOL_UNDERLAY = "198.18.32.0/24"


@pytest.fixture(scope="session")
def netpol_lab(migrator_home: Path) -> Iterator[Lab]:
    """The one NetworkPolicy lab of the session: 3 calico nodes (felix-like agents), the netpol app."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"npt{os.getpid() % 1000}"
    the_lab = Lab(name)
    try:
        the_lab.up(
            LabSpec(
                name=name,
                nodes=3,
                cni=CniKind.CALICO,
                pods_per_node=0,
                app=(AppKind.NETPOL,),
                underlay=NETPOL_UNDERLAY,
            )
        )
        yield the_lab
    finally:
        res = the_lab.down()
        assert not res.leftovers, res.leftovers
        assert not host_traces(name, migrator_home / "labs" / name)
        host_sets = subprocess.run(
            ["ipset", "list", "-n"], capture_output=True, text=True, timeout=10, check=False
        )
        assert "mnp-" not in host_sets.stdout  # the agent's ipsets lived in the node namespaces only


@contextmanager
def policies_reset(lab: Lab, tmp_path: Path) -> Iterator[Lab]:
    """A netpol lab with no policies before and after (pod and namespace labels restored)."""
    st = lab.require()
    if st.policies:
        docs = [policy_doc(p.namespace, p.name, {"podSelector": {}}) for p in st.policies.values()]
        lab.delete([write_docs(tmp_path, docs, "before.yaml")])
    labels = {k: dict(p.labels) for k, p in st.pods.items()}
    ns_labels = {k: dict(n.labels) for k, n in st.namespaces.items()}
    yield lab
    st = lab.require()
    if st.policies:
        docs = [policy_doc(p.namespace, p.name, {"podSelector": {}}) for p in st.policies.values()]
        lab.delete([write_docs(tmp_path, docs, "cleanup.yaml")])
    for key, want in labels.items():
        have = st.pods[key].labels if key in st.pods else want
        if have != want:
            lab.label("pod", key, {**{k: None for k in have if k not in want}, **want})
    for key, want_ns in ns_labels.items():
        have_ns = st.namespaces[key].labels if key in st.namespaces else want_ns
        if have_ns != want_ns:
            lab.label("namespace", key, {**{k: None for k in have_ns if k not in want_ns}, **want_ns})


@pytest.fixture()
def netpol_clean(netpol_lab: Lab, tmp_path: Path) -> Iterator[Lab]:
    """The netpol lab with no policies before and after the test (pod and namespace labels restored)."""
    with policies_reset(netpol_lab, tmp_path) as lab:
        yield lab


# ----------------------------------------------------------------------------------------- leftovers


def host_traces(name: str, lab_dir: Path) -> list[str]:
    """Everything of lab ``name`` still visible from the host: netns, links, processes, iptables, files."""
    prefix = lab_prefix(name) + "-"
    traces: list[str] = []
    out = subprocess.run(
        ["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    )
    for entry in json.loads(out.stdout or "[]"):
        if str(entry["name"]).startswith(prefix):
            traces.append(f"netns {entry['name']}")
    out = subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, timeout=10, check=False
    )
    for entry in json.loads(out.stdout or "[]"):
        if str(entry["ifname"]).startswith(prefix) or str(entry["ifname"]) == lab_prefix(name) + "-h":
            traces.append(f"link {entry['ifname']}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(re.escape(prefix), cmd) or str(lab_dir) in cmd:
            traces.append(f"process {proc.name}: {cmd[:120]}")
    ipt = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=10, check=False).stdout
    for line in ipt.splitlines():
        if prefix in line or "KUBE-" in line or "FLANNEL" in line or "MNP-" in line:
            traces.append(f"iptables {line}")
    if lab_dir.exists():
        traces.append(f"dir {lab_dir}")
    netns_etc = Path("/etc/netns")
    if netns_etc.is_dir():
        traces += [f"file {p}" for p in netns_etc.iterdir() if p.name.startswith(prefix)]
    return traces
