"""The Ansible node executor against real sshd nodes (network namespaces) over real SSH."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sshnodes import SshNodeFarm

from migrator.errors import Interrupted, StepFailed, StepTimeout, TemporaryError, UnsupportedFeature
from migrator.playbooks import HostsUnreachable, PlaybookFailed, PlaybookInterrupted
from migrator.ports import PlaybookRequest, RunnerStatus
from migrator.targets.ansible.executor import AnsibleRunnerExecutor, require_features, run_with_retry

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TESTS_PLAYBOOKS = Path(__file__).parent / "playbooks"

FLANNEL_CONFLIST = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def node_state(farm: SshNodeFarm, name: str) -> dict[str, Any]:
    links = json.loads(farm.node_exec(name, ["ip", "-j", "-d", "link", "show"]))
    save = farm.node_exec(name, ["iptables-save"])
    builtin = tuple(f":{c} ACCEPT" for c in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"))
    # rules and chains; an empty table with default policies (iptables creates it on first use) is no state
    rules = [
        line for line in save.splitlines() if line.startswith(("-A", ":")) and not line.startswith(builtin)
    ]
    cni = farm.node_exec(name, ["sh", "-c", "cd /etc/cni/net.d && sha256sum * 2>/dev/null || true"])
    return {"links": sorted(link["ifname"] for link in links), "iptables": rules, "cni": cni}


def seed_flannel(farm: SshNodeFarm, name: str) -> None:
    """Flannel-like leftovers on a node: devices, a route, iptables chains with jump rules, a conflist."""
    node = farm.nodes[name]
    i = int(node.address.rsplit(".", 1)[1])
    script = f"""
    set -e
    ip link add cni0 type bridge && ip link set cni0 up
    ip link add flannel.1 type vxlan id 1 local {node.address} dev eth0 dstport 8472 nolearning
    ip addr add 10.244.{i}.0/32 dev flannel.1 && ip link set flannel.1 up
    ip route add 10.244.250.0/24 via 10.244.250.0 dev flannel.1 onlink
    ip neigh add 10.244.250.0 lladdr 02:00:00:00:00:fa dev flannel.1 nud permanent
    bridge fdb add 02:00:00:00:00:fa dev flannel.1 dst 198.19.20.250
    iptables -N FLANNEL-FWD
    iptables -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
    iptables -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
    iptables -t nat -N FLANNEL-POSTRTG
    iptables -t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN
    iptables -t nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
    iptables -N KUBE-FORWARD
    iptables -A FORWARD -j KUBE-FORWARD
    cat > /etc/cni/net.d/10-flannel.conflist <<'X'
{json.dumps(FLANNEL_CONFLIST)}
X
    """
    farm.node_exec(name, ["sh", "-c", script])


def unseed(farm: SshNodeFarm, name: str) -> None:
    script = """
    ip link del cni0 2>/dev/null; ip link del flannel.1 2>/dev/null
    iptables -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD 2>/dev/null
    iptables -F FLANNEL-FWD 2>/dev/null; iptables -X FLANNEL-FWD 2>/dev/null
    iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG 2>/dev/null
    iptables -t nat -F FLANNEL-POSTRTG 2>/dev/null; iptables -t nat -X FLANNEL-POSTRTG 2>/dev/null
    iptables -D FORWARD -j KUBE-FORWARD 2>/dev/null; iptables -X KUBE-FORWARD 2>/dev/null
    rm -f /etc/cni/net.d/*
    true
    """
    farm.node_exec(name, ["sh", "-c", script])


def test_playbook_succeeds_on_all_nodes(
    executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    result = executor.run_playbook(
        PlaybookRequest(playbook=Path("ping.yml"), hosts=hosts),
        data_dir=tmp_path / "ping",
        on_event=lambda e: events.append(dict(e)),
    )
    assert result.status is RunnerStatus.SUCCESSFUL
    assert set(result.hosts) == set(hosts)
    assert all(h.ok == 1 and not h.failed and not h.unreachable for h in result.hosts.values())
    assert sorted(e["host"] for e in events) == sorted(hosts)
    assert all(e["status"] == "ok" and e["task"] == "Ping" for e in events)
    json.dumps(events)  # JSON-able
    assert result.artifacts_dir is not None and (result.artifacts_dir / "job_events").is_dir()
    assert (result.artifacts_dir / "status").read_text() == "successful"


def test_failed_task_on_one_node_names_host_and_task(
    executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    bad = hosts[1]
    request = PlaybookRequest(
        playbook=TESTS_PLAYBOOKS / "fail-on-purpose.yml", hosts=hosts, extra_vars={"fail_on": bad}
    )
    with pytest.raises(StepFailed) as info:
        executor.run_playbook(request, data_dir=tmp_path / "fail")
    err = info.value
    assert isinstance(err, PlaybookFailed)
    assert err.node == bad
    assert "Fail on purpose" in str(err) and f"failing on purpose on {bad}" in str(err)
    assert err.result is not None
    assert err.result.hosts[bad].failed == 1 and err.result.hosts[bad].failed_task == "Fail on purpose"
    for good in set(hosts) - {bad}:  # the ignored failure does not count
        assert err.result.hosts[good].failed == 0 and err.result.hosts[good].failed_task is None


def test_unreachable_node_is_temporary_then_retried_then_fails_clearly(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    down = hosts[2]
    farm.stop_sshd(down)
    try:
        request = PlaybookRequest(playbook=Path("ping.yml"), hosts=hosts)
        with pytest.raises(TemporaryError) as info:
            executor.run_playbook(request, data_dir=tmp_path / "once")
        assert isinstance(info.value, HostsUnreachable) and info.value.hosts == (down,)
        assert info.value.result is not None and info.value.result.hosts[hosts[0]].ok == 1

        slept: list[float] = []
        started = time.monotonic()
        with pytest.raises(StepFailed) as final:
            run_with_retry(executor, request, data_dir=tmp_path / "retry", attempts=3, sleep=slept.append)
        assert final.value.node == down
        assert "after 3 attempts" in str(final.value) and down in str(final.value)
        assert len(slept) == 2 and sorted(p.name for p in (tmp_path / "retry").iterdir()) == [
            "attempt-1",
            "attempt-2",
            "attempt-3",
        ]
        assert time.monotonic() - started < 60

        # the node comes back during the back-off: the retry succeeds
        result = run_with_retry(
            executor,
            request,
            data_dir=tmp_path / "recover",
            attempts=3,
            sleep=lambda _s: farm.start_sshd(down),
        )
        assert result.status is RunnerStatus.SUCCESSFUL and result.hosts[down].ok == 1
    finally:
        farm.start_sshd(down)


def test_check_mode_changes_nothing_then_apply_then_idempotent(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    targets = hosts[:2]
    for name in targets:
        seed_flannel(farm, name)
    try:
        steps = [
            PlaybookRequest(
                playbook=Path("link-absent.yml"),
                hosts=targets,
                extra_vars={"links": ["flannel.1", "cni0", "no-such-link"]},
            ),
            PlaybookRequest(
                playbook=Path("iptables-chains-absent.yml"),
                hosts=targets,
                extra_vars={"chain_prefixes": ["FLANNEL"]},
            ),
            PlaybookRequest(
                playbook=Path("cni-config.yml"),
                hosts=targets,
                extra_vars={"cni_file": "10-flannel.conflist", "cni_state": "absent"},
            ),
            PlaybookRequest(
                playbook=Path("cni-config.yml"),
                hosts=targets,
                extra_vars={
                    "cni_file": "10-calico.conflist",
                    "cni_content": {
                        "name": "k8s-pod-network",
                        "cniVersion": "0.3.1",
                        "plugins": [{"type": "ptp"}],
                    },
                },
            ),
        ]
        before = {n: node_state(farm, n) for n in hosts}
        for i, step in enumerate(steps):
            preview = executor.run_playbook(
                PlaybookRequest(**{**step.__dict__, "check": True, "diff": True}),
                data_dir=tmp_path / f"check-{i}",
            )
            assert preview.changed == len(targets), step.playbook
            assert all(h.diffs for h in preview.hosts.values()), step.playbook
        assert {n: node_state(farm, n) for n in hosts} == before

        for i, step in enumerate(steps):
            applied = executor.run_playbook(step, data_dir=tmp_path / f"apply-{i}")
            assert applied.changed == len(targets), step.playbook
        for name in targets:
            state = node_state(farm, name)
            assert "flannel.1" not in state["links"] and "cni0" not in state["links"]
            assert not [r for r in state["iptables"] if "FLANNEL" in r]
            assert any("KUBE-FORWARD" in r for r in state["iptables"])  # other owners untouched
            assert "10-flannel.conflist" not in state["cni"] and "10-calico.conflist" in state["cni"]
        assert node_state(farm, hosts[2]) == before[hosts[2]]  # not in the limit

        for i, step in enumerate(steps):
            again = executor.run_playbook(step, data_dir=tmp_path / f"again-{i}")
            assert again.changed == 0, step.playbook
    finally:
        for name in targets:
            unseed(farm, name)


def test_secret_never_reaches_the_data_dir(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(12)
    events: list[dict[str, Any]] = []
    data_dir = tmp_path / "secret"
    request = PlaybookRequest(
        playbook=TESTS_PLAYBOOKS / "secret.yml",
        hosts=hosts,
        extra_vars={"db_password": secret, "public_note": "hello-public"},
        secret_vars=frozenset({"db_password"}),
    )
    result = executor.run_playbook(request, data_dir=data_dir, on_event=lambda e: events.append(dict(e)))
    assert result.status is RunnerStatus.SUCCESSFUL
    for name in hosts:  # the playbook did get the value
        assert farm.node_exec(name, ["cat", "/etc/migrator-secret-test"]).strip() == secret
        farm.node_exec(name, ["rm", "-f", "/etc/migrator-secret-test"])
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaks == []
    assert any(b"hello-public" in p.read_bytes() for p in files)  # public vars are kept
    assert secret not in json.dumps(events)
    assert any(b"********" in p.read_bytes() for p in files)  # the task without no_log was scrubbed
    assert {e["task"] for e in events} == {
        "Write the secret on the node",
        "Echo the secret (no no_log, on purpose)",
    }
    assert not list(Path("/dev/shm").glob("mgr-sec-*"))


def test_node_facts_report_interfaces_routes_chains_and_cni(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    seed_flannel(farm, hosts[0])
    try:
        facts = executor.node_facts(hosts, data_dir=tmp_path / "facts")
    finally:
        unseed(farm, hosts[0])
    assert set(facts) == set(hosts)
    f1 = facts[hosts[0]]
    assert f1["hostname"] == hosts[0]
    assert f1["ssh"]["client"] == f"{farm.net}.1" and f1["ssh"]["server"] == farm.nodes[hosts[0]].address
    assert f1["ssh"]["server_port"] == 22
    links = {i["name"]: i for i in f1["interfaces"]}
    assert links["flannel.1"]["kind"] == "vxlan"
    assert links["flannel.1"]["vxlan"]["id"] == 1 and links["flannel.1"]["vxlan"]["port"] == 8472
    assert links["flannel.1"]["vxlan"]["fdb"] == [{"mac": "02:00:00:00:00:fa", "dst": "198.19.20.250"}]
    assert links["flannel.1"]["vxlan"]["neighbors"] == [
        {"ip": "10.244.250.0", "mac": "02:00:00:00:00:fa", "state": ["PERMANENT"]}
    ]
    assert links["cni0"]["kind"] == "bridge"
    assert farm.nodes[hosts[0]].address + "/24" in links["eth0"]["addresses"]
    assert any(r.get("dst") == "10.244.250.0/24" and r.get("dev") == "flannel.1" for r in f1["routes"])
    chains = f1["iptables"]["chains"]
    assert chains["FLANNEL"] == {"filter": ["FLANNEL-FWD"], "nat": ["FLANNEL-POSTRTG"]}
    assert chains["KUBE"] == {"filter": ["KUBE-FORWARD"]}
    assert f1["iptables"]["jumps"]["FLANNEL"] == 2
    (cni,) = f1["cni"]["files"]
    assert cni["name"] == "10-flannel.conflist" and cni["content"] == FLANNEL_CONFLIST
    f2 = facts[hosts[1]]
    assert f2["cni"]["files"] == [] and f2["iptables"]["chains"] == {}
    assert {i["name"] for i in f2["interfaces"]} == {"lo", "eth0"}


def test_timeout_and_cancel(executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path) -> None:
    sleep = TESTS_PLAYBOOKS / "sleep.yml"
    started = time.monotonic()
    with pytest.raises(StepTimeout):
        executor.run_playbook(
            PlaybookRequest(playbook=sleep, hosts=hosts[:1], timeout=3), data_dir=tmp_path / "timeout"
        )
    assert time.monotonic() - started < 15

    cancel = threading.Event()
    timer = threading.Timer(2.0, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted) as info:
            executor.run_playbook(
                PlaybookRequest(playbook=sleep, hosts=hosts), data_dir=tmp_path / "cancel", cancel=cancel
            )
    finally:
        timer.cancel()
    assert isinstance(info.value, PlaybookInterrupted)
    assert time.monotonic() - started < 15
    with pytest.raises(Interrupted):  # already canceled: not even started
        executor.run_playbook(
            PlaybookRequest(playbook=sleep, hosts=hosts), data_dir=tmp_path / "c2", cancel=cancel
        )


def test_unknown_hosts_and_missing_playbook_fail_up_front(
    executor: AnsibleRunnerExecutor, tmp_path: Path
) -> None:
    with pytest.raises(StepFailed, match=r"not in inventory.*ghost"):
        executor.run_playbook(
            PlaybookRequest(playbook=Path("ping.yml"), hosts=("ghost",)), data_dir=tmp_path / "x"
        )
    with pytest.raises(StepFailed, match="does not exist"):
        executor.run_playbook(
            PlaybookRequest(playbook=Path("nope.yml"), hosts=("ans-n1",)), data_dir=tmp_path / "y"
        )


def test_kernel_features_probe_and_require(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    before = {n: node_state(farm, n) for n in hosts}
    features = executor.kernel_features(hosts, data_dir=tmp_path / "features")
    assert {n: node_state(farm, n) for n in hosts} == before  # probes leave nothing behind
    assert set(features) == set(hosts)
    f = features[hosts[0]]
    host_has_netem = Path("/sys/module/sch_netem").exists()
    assert f["qdisc"]["netem"] is host_has_netem
    assert f["qdisc"]["tbf"] is True and f["qdisc"]["htb"] is True
    assert f["link"]["vxlan"] is True and f["link"]["bridge"] is True
    assert f["iptables"]["statistic"] is True
    require_features(features, ["qdisc/tbf", "link/vxlan", "iptables/statistic"])
    if not host_has_netem:
        assert "qdisc/netem" in f["errors"]
        with pytest.raises(UnsupportedFeature) as info:
            require_features(features, ["qdisc/tbf", "qdisc/netem"])
        assert info.value.node == sorted(hosts)[0] and info.value.feature == "netem"
        assert "netem" in str(info.value) and sorted(hosts)[0] in str(info.value)


def test_cni_teardown_in_one_run(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    node = hosts[0]
    seed_flannel(farm, node)
    script = "mkdir -p /run/flannel; echo FLANNEL_MTU=1450 > /run/flannel/subnet.env"
    farm.node_exec(node, ["sh", "-c", script])
    try:
        request = PlaybookRequest(
            playbook=Path("cni-teardown.yml"),
            hosts=(node,),
            extra_vars={
                "links": ["flannel.1", "cni0"],
                "chain_prefixes": ["FLANNEL"],
                "cni_files": ["10-flannel.conflist"],
                "extra_files": ["/run/flannel/subnet.env"],
            },
        )
        before = node_state(farm, node)
        preview = executor.run_playbook(
            PlaybookRequest(**{**request.__dict__, "check": True}), data_dir=tmp_path / "check"
        )
        assert node_state(farm, node) == before
        assert preview.hosts[node].changed == 4 and len(preview.hosts[node].diffs) == 4
        done = executor.run_playbook(request, data_dir=tmp_path / "apply")
        assert done.hosts[node].changed == 4
        facts = executor.node_facts((node,), data_dir=tmp_path / "facts")[node]
        assert "FLANNEL" not in facts["iptables"]["chains"] and "KUBE" in facts["iptables"]["chains"]
        assert not {"flannel.1", "cni0"} & {i["name"] for i in facts["interfaces"]}
        assert facts["cni"]["files"] == [] and facts["flannel_subnet_env"] is None
        again = executor.run_playbook(request, data_dir=tmp_path / "again")
        assert again.changed == 0
    finally:
        unseed(farm, node)


def test_become(executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path) -> None:
    # the lab nodes have no sudo: su works for root; a real inventory sets its own become method
    result = executor.run_playbook(
        PlaybookRequest(
            playbook=Path("ping.yml"),
            hosts=hosts[:1],
            become=True,
            extra_vars={"ansible_become_method": "su"},
        ),
        data_dir=tmp_path / "become",
    )
    assert result.status is RunnerStatus.SUCCESSFUL
    assert "--become" in (result.artifacts_dir / "command").read_text()  # type: ignore[operator]


def test_broken_playbook_fails_with_ansible_output(
    executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    with pytest.raises(StepFailed) as info:
        executor.run_playbook(
            PlaybookRequest(playbook=TESTS_PLAYBOOKS / "broken.yml", hosts=hosts),
            data_dir=tmp_path / "broken",
        )
    assert isinstance(info.value, PlaybookFailed) and info.value.node is None
    assert "conflicting action statements" in str(info.value)


def test_a_broken_observer_does_not_break_the_run(
    executor: AnsibleRunnerExecutor, hosts: tuple[str, ...], tmp_path: Path
) -> None:
    def boom(_event: object) -> None:
        raise RuntimeError("observer bug")

    result = executor.run_playbook(
        PlaybookRequest(playbook=Path("ping.yml"), hosts=hosts[:1]), data_dir=tmp_path / "boom", on_event=boom
    )
    assert result.status is RunnerStatus.SUCCESSFUL and result.hosts[hosts[0]].ok == 1
