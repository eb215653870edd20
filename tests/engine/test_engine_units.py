"""Units: node selection and waves, the journal reader, the lock, registries, node actions, dry run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import make_plan, touch
from rich.console import Console

from migrator.actions import load_builtins as load_actions
from migrator.actions import registered_actions, unavailable_actions
from migrator.actions.context import StepContext
from migrator.checks import load_builtins as load_checks
from migrator.checks import registered_checks, unavailable_checks
from migrator.cli.console import PlainObserver, RichObserver, dry_run_tree
from migrator.engine import EngineOptions, apply_plan, dry_run, load_plan_file, source_from_plan
from migrator.engine.lock import TargetLock, lock_path, read_lock
from migrator.errors import LockHeld, PlanError
from migrator.plan.models import (
    EmptyArgs,
    ForEachNodes,
    NodeDrainArgs,
    NodeLabelArgs,
    NodeOrder,
    NodeSelector,
    action_names,
    check_type_names,
)
from migrator.plan.selection import order_nodes, resolve_waves, select_nodes, split_waves, wave_size
from migrator.ports import Node, Target
from migrator.runs.journal import Journal, JournalError, Scrubber, read_journal
from migrator.testing.fake import FakeCluster, fake_target

# ------------------------------------------------------------------------------------ selection


def nodes(workers: int = 5, cps: int = 2) -> list[Node]:
    return FakeCluster.with_nodes(workers + cps, control_planes=cps).list_nodes()


def fe(**kw: object) -> ForEachNodes:
    return ForEachNodes.model_validate(kw)


def test_waves_from_an_int() -> None:
    assert resolve_waves(nodes(), fe(max_unavailable=2)) == [
        ["worker-1", "worker-2"],
        ["worker-3", "worker-4"],
        ["worker-5", "cp-1"],
        ["cp-2"],
    ]


def test_waves_from_a_percentage_round_down_at_least_one() -> None:
    assert wave_size(0.5, 7) == 3
    assert wave_size(0.01, 7) == 1
    assert wave_size(1.0, 7) == 7
    waves = resolve_waves(nodes(), fe(max_unavailable="30%", nodes={"exclude_control_plane": True}))
    assert waves == [["worker-1"], ["worker-2"], ["worker-3"], ["worker-4"], ["worker-5"]]
    waves = resolve_waves(nodes(), fe(max_unavailable="40%", nodes={"exclude_control_plane": True}))
    assert waves == [["worker-1", "worker-2"], ["worker-3", "worker-4"], ["worker-5"]]


def test_workers_first_then_control_plane_and_other_orders() -> None:
    mixed = list(reversed(nodes(2, 2)))
    assert [n.name for n in order_nodes(mixed, NodeOrder.WORKERS_FIRST)] == [
        "worker-1",
        "worker-2",
        "cp-1",
        "cp-2",
    ]
    assert [n.name for n in order_nodes(mixed, NodeOrder.NAME)] == ["cp-1", "cp-2", "worker-1", "worker-2"]
    listed = ["worker-2", "cp-1", "worker-1"]
    chosen = select_nodes(mixed, NodeSelector(names=listed))
    assert [n.name for n in order_nodes(chosen, NodeOrder.AS_LISTED, listed)] == listed


def test_selectors_exclude_labels_and_unknown_names() -> None:
    all_nodes = nodes(3, 1)
    assert [
        n.name
        for n in select_nodes(all_nodes, NodeSelector(exclude_control_plane=True, exclude=["worker-2"]))
    ] == ["worker-1", "worker-3"]
    sel = NodeSelector.model_validate({"labels": "node-role.kubernetes.io/control-plane"})
    assert [n.name for n in select_nodes(all_nodes, sel)] == ["cp-1"]
    with pytest.raises(PlanError, match="not in the cluster"):
        select_nodes(all_nodes, NodeSelector(names=["nope"]))


def test_sampling_is_seeded() -> None:
    all_nodes = nodes(10, 1)
    a = select_nodes(all_nodes, NodeSelector(count=3, seed=7, exclude_control_plane=True))
    b = select_nodes(all_nodes, NodeSelector(count=3, seed=7, exclude_control_plane=True))
    c = select_nodes(all_nodes, NodeSelector(count=3, seed=8, exclude_control_plane=True))
    assert [n.name for n in a] == [n.name for n in b] and len(a) == 3
    assert [n.name for n in a] != [n.name for n in c]
    half = select_nodes(
        all_nodes, NodeSelector.model_validate({"percent": "50%", "exclude_control_plane": True})
    )
    assert len(half) == 5
    assert split_waves(half, 2)[0] == [half[0].name, half[1].name]


# -------------------------------------------------------------------------------------- journal


def test_journal_is_append_only_fsynced_and_scrubbed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", "r1", scrub=Scrubber(["hunter2"]))
    journal.append("run.start", token="hunter2", nested={"list": ["a hunter2 b"]})
    journal.append("run.end")
    journal.close()
    text = (tmp_path / "j.jsonl").read_text()
    assert "hunter2" not in text and text.count("***") == 2
    found = read_journal(tmp_path / "j.jsonl")
    assert [e["seq"] for e in found.events] == [1, 2] and found.torn is None


def test_torn_last_line_is_reported_and_earlier_events_kept(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "r1")
    for i in range(3):
        journal.append("x", i=i)
    journal.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 4, "type": "x", "i"')
    found = read_journal(path)
    assert [e["i"] for e in found.events] == [0, 1, 2]
    assert found.torn is not None and "line 4 is torn" in found.torn
    # reopening for append repairs the tail, then goes on
    journal = Journal(path, "r1")
    assert journal.repaired is not None
    journal.append("y")
    journal.close()
    assert [e["seq"] for e in read_journal(path).events] == [1, 2, 3, 4]


def test_corruption_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"seq": 1, "type": "a"}\nGARBAGE\n{"seq": 3, "type": "c"}\n')
    with pytest.raises(JournalError, match=r"j.jsonl:2: journal is corrupt.*1 events before it are intact"):
        read_journal(path)
    path.write_text('{"seq": 1, "type": "a"}\n{"seq": 5, "type": "b"}\n{"seq": 6, "type": "c"}\n')
    with pytest.raises(JournalError, match="seq 5 follows seq 1"):
        read_journal(path)


# ----------------------------------------------------------------------------------------- lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_is_refused_with_the_holders_run_id() -> None:
    first = TargetLock("lab:x", "run-one")
    first.acquire()
    with pytest.raises(LockHeld, match="locked by run run-one") as info:
        TargetLock("lab:x", "run-two").acquire()
    assert info.value.holder_run_id == "run-one"
    first.release()
    assert not lock_path("lab:x").exists()
    second = TargetLock("lab:x", "run-two")
    second.acquire()
    second.release()


def test_stale_lock_is_reported_and_taken_over_only_when_forced() -> None:
    path = lock_path("fake")
    path.write_text(
        json.dumps({"run_id": "old-run", "pid": dead_pid(), "host": os.uname().nodename, "started": "x"})
    )
    with pytest.raises(LockHeld, match=r"stale lock of run old-run.*--force-unlock old-run"):
        TargetLock("fake", "new-run").acquire()
    with pytest.raises(LockHeld):
        TargetLock("fake", "new-run").acquire(force_unlock="other-run")
    lock = TargetLock("fake", "new-run")
    lock.acquire(force_unlock="old-run")
    holder = read_lock("fake")
    assert holder is not None and holder.run_id == "new-run" and holder.pid == os.getpid()
    lock.release()


def test_a_live_lock_cannot_be_forced() -> None:
    path = lock_path("fake")
    path.write_text(
        json.dumps({"run_id": "live", "pid": os.getppid(), "host": os.uname().nodename, "started": "x"})
    )
    with pytest.raises(LockHeld, match="locked by run live"):
        TargetLock("fake", "new").acquire(force_unlock="live")


def test_a_run_takes_back_its_own_stale_lock() -> None:
    lock_path("fake").write_text(
        json.dumps({"run_id": "mine", "pid": dead_pid(), "host": os.uname().nodename, "started": "x"})
    )
    lock = TargetLock("fake", "mine")
    lock.acquire()
    lock.release()


# ------------------------------------------------------------------------------------- registry


def test_every_plan_action_and_check_is_implemented_or_declared_unavailable() -> None:
    registered_actions()  # loads the built-ins
    load_actions()
    load_checks()
    for name in action_names():
        assert (name in registered_actions()) != (name in unavailable_actions()), name
    for name in check_type_names():
        assert (name in registered_checks()) != (name in unavailable_checks()), name
    assert {
        "demo.touch",
        "demo.sleep",
        "demo.fail",
        "node.cordon",
        "node.uncordon",
        "node.drain",
        "node.label",
        "node.restart-pods",
    } <= set(registered_actions())
    assert {"demo.markers", "nodes.schedulable"} <= set(registered_checks())
    for reason in [*unavailable_actions().values(), *unavailable_checks().values()]:
        assert reason


# --------------------------------------------------------------------------------- node actions


def ctx_for(target: Target, node: str, tmp: Path, prepared: object = None) -> StepContext:
    return StepContext(
        run_id="r",
        run_dir=tmp,
        artifacts_dir=tmp,
        target=target,
        node=target.cluster.get_node(node),
        prepared=prepared,
    )


def test_cordon_undo_restores_the_prior_state_even_after_a_redo(tmp_path: Path) -> None:
    target = fake_target()
    cordon = registered_actions()["node.cordon"]
    ctx = ctx_for(target, "worker-1", tmp_path)
    prepared = cordon.prepare(ctx, EmptyArgs())
    ctx.prepared = prepared
    cordon.do(ctx, EmptyArgs())
    again = cordon.do(ctx, EmptyArgs())  # a re-run after a crash sees the node already cordoned
    assert again == {"schedulable": False}
    cordon.undo(ctx, EmptyArgs(), again)
    assert target.cluster.get_node("worker-1").schedulable
    # a node that was cordoned before stays cordoned after the undo
    target.cluster.set_schedulable("worker-2", False)
    ctx2 = ctx_for(target, "worker-2", tmp_path)
    ctx2.prepared = cordon.prepare(ctx2, EmptyArgs())
    cordon.do(ctx2, EmptyArgs())
    cordon.undo(ctx2, EmptyArgs(), None)
    assert not target.cluster.get_node("worker-2").schedulable


def test_label_undo_restores_prior_values_and_absence(tmp_path: Path) -> None:
    target = fake_target()
    target.cluster.label_node("worker-1", {"zone": "a"})
    label = registered_actions()["node.label"]
    args = NodeLabelArgs(labels={"zone": "b", "cni": "calico", "kubernetes.io/hostname": None})
    ctx = ctx_for(target, "worker-1", tmp_path)
    ctx.prepared = label.prepare(ctx, args)
    label.do(ctx, args)
    labels = target.cluster.get_node("worker-1").labels
    assert labels["zone"] == "b" and labels["cni"] == "calico" and "kubernetes.io/hostname" not in labels
    label.undo(ctx, args, None)
    labels = target.cluster.get_node("worker-1").labels
    assert labels["zone"] == "a" and "cni" not in labels and labels["kubernetes.io/hostname"] == "worker-1"


def test_drain_moves_pods_and_undo_uncordons(tmp_path: Path) -> None:
    target = fake_target()
    drain = registered_actions()["node.drain"]
    ctx = ctx_for(target, "worker-1", tmp_path)
    ctx.prepared = drain.prepare(ctx, NodeDrainArgs())
    result = drain.do(ctx, NodeDrainArgs())
    assert result["evicted"] and not target.cluster.list_pods(node="worker-1")
    drain.undo(ctx, NodeDrainArgs(), result)
    assert target.cluster.get_node("worker-1").schedulable


def test_fake_cluster_state_file_survives_a_new_process_view(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    one = fake_target(state_file=state)
    one.cluster.set_schedulable("worker-2", False)
    two = fake_target(state_file=state)
    assert not two.cluster.get_node("worker-2").schedulable
    assert one.cluster.identity() == two.cluster.identity()


# -------------------------------------------------------------------------------------- dry run


def test_dry_run_changes_nothing_and_shows_waves_args_and_previews(
    target: Target, migrator_home: Path
) -> None:
    plan = make_plan(
        [
            {"name": "s", "steps": [touch("a")]},
            {
                "name": "n",
                "for_each": {"nodes": {"exclude_control_plane": True}, "max_unavailable": 2},
                "steps": [{"action": "node.drain"}, touch("node-${{ node.name }}", name="mark")],
            },
        ],
        preflight=[{"type": "nodes.schedulable"}],
    )
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    before = cluster.state()
    report = dry_run(source_from_plan(plan), target)
    assert cluster.state() == before
    assert not any(
        op in ("set_schedulable", "drain_node", "label_node", "restart_pods") for op, _ in cluster.calls
    )
    assert not list(target.markers_dir.iterdir())
    assert not (migrator_home / "runs").exists() or not list((migrator_home / "runs").iterdir())
    assert not lock_path("fake").exists()
    stage = report["stages"][1]
    assert [[n["node"] for n in w["nodes"]] for w in stage["waves"]] == [
        ["worker-1", "worker-2"],
        ["worker-3"],
    ]
    first = stage["waves"][0]["nodes"][0]["steps"]
    assert first[0]["preview"][0]["command"] == "kubectl drain worker-1 --ignore-daemonsets"
    assert first[1]["args"]["marker"] == "node-worker-1"
    assert report["preflight"][0]["type"] == "nodes.schedulable"
    json.dumps(report)


# ------------------------------------------------------------------------------------- observers


def test_observers_render_a_whole_run(target: Target, tmp_path: Path) -> None:
    plan = make_plan(
        [
            {"name": "s", "steps": [touch("a")]},
            {
                "name": "n",
                "for_each": {"nodes": {"exclude_control_plane": True}, "max_unavailable": 2},
                "steps": [touch("node-${{ node.name }}", name="mark", fail_when="node-worker-3")],
            },
        ]
    )
    plain, rich_out = io.StringIO(), io.StringIO()
    observers = [PlainObserver(plain), RichObserver(Console(file=rich_out, force_terminal=True, width=100))]
    result = apply_plan(
        source_from_plan(plan),
        target,
        observers=lambda rundir: observers,
        options=EngineOptions(sleep=lambda s: None),
    )
    assert result.exit_code == 1
    lines = plain.getvalue().splitlines()
    assert any("wave 2: worker-3" in line for line in lines)
    assert any("undo n/mark@worker-3" in line for line in lines)
    assert "run failed-rolled-back" in lines[-1]
    rendered = rich_out.getvalue()
    assert "stage n" in rendered and "worker-3" in rendered
    tree = Console(file=io.StringIO(), width=120)
    tree.print(dry_run_tree(dry_run(source_from_plan(plan), target)))
    assert "node-worker-1" in tree.file.getvalue()  # type: ignore[attr-defined]
    log = (result.run_dir / "migrator.log.jsonl").read_text().splitlines()
    assert json.loads(log[0])["record"]["extra"]["event"]["type"] == "run.start"


def test_unavailable_actions_are_located_in_the_plan_file(tmp_path: Path, ansible_unavailable: None) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: p}\nspec:\n  stages:\n"
        "    - name: off\n      enabled: false\n      steps: [{action: demo.sleep, args: {duration: 1s}}]\n"
        "    - name: s\n      steps:\n        - action: ansible.playbook\n          args: {playbook: x.yml}\n"
    )
    source = load_plan_file(path)
    with pytest.raises(PlanError) as info:
        dry_run(source, fake_target())
    assert [str(p) for p in info.value.problems] == [
        f"{path}:11:19: stages[1].steps[0].action: action 'ansible.playbook' is not available yet:"
        " switched off for this test"
    ]


def test_runs_started_in_the_same_second_are_listed_in_start_order() -> None:
    from migrator.runs.rundir import RunDir, list_runs  # noqa: PLC0415

    # the random suffix sorts the other way round: the start time in meta.json decides
    made = [
        ("20261126-155342-hello-e483", "2026-11-26T15:53:42.100Z"),
        ("20261126-155342-hello-0a1b", "2026-11-26T15:53:42.900Z"),
        ("20261126-155341-hello-ffff", "2026-11-26T15:53:41.999Z"),
        ("20261126-155343-hello-0000", "2026-11-26T15:53:43.000Z"),
    ]
    for run_id, started in made:
        run = RunDir.create(run_id)
        run.write_meta({"run_id": run_id, "started": started})
        run.journal.write_text("")
    assert [r.run_id for r in list_runs()] == [
        "20261126-155341-hello-ffff",
        "20261126-155342-hello-e483",
        "20261126-155342-hello-0a1b",
        "20261126-155343-hello-0000",
    ]
