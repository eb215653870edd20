"""Record real ansible-runner events into ``data/*.json`` for the event-mapping unit tests.

Run as root: ``PYTHONPATH=. python tests/ansible/record_events.py``. Builds a 3-node SSH farm, runs each
scenario through ``AnsibleRunnerExecutor`` and stores the events ansible-runner wrote (``job_events/``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from sshnodes import SshNodeFarm

from migrator.errors import MigratorError
from migrator.ports import PlaybookRequest, PlaybookResult
from migrator.targets.ansible.executor import AnsibleRunnerExecutor

HERE = Path(__file__).parent
DATA = HERE / "data"
PB = HERE / "playbooks"


def events_of(artifacts: Path) -> list[dict[str, Any]]:
    files = sorted((artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0]))
    return [json.loads(p.read_text()) for p in files]


def record(name: str, ex: AnsibleRunnerExecutor, request: PlaybookRequest, work: Path) -> None:
    result: PlaybookResult | None
    try:
        result = ex.run_playbook(request, data_dir=work / name)
    except MigratorError as exc:
        result = getattr(exc, "result", None)
    assert result is not None and result.artifacts_dir is not None
    doc = {
        "scenario": name,
        "playbook": request.playbook.name,
        "hosts": list(request.hosts),
        "status": result.status.value,
        "events": events_of(result.artifacts_dir),
    }
    (DATA / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(name, result.status.value, len(doc["events"]), "events")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    with SshNodeFarm(3) as farm, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ex = AnsibleRunnerExecutor(inventory=farm.inventory)
        hosts = tuple(farm.nodes)
        record("ping_ok", ex, PlaybookRequest(playbook=Path("ping.yml"), hosts=hosts), work)
        record(
            "fail_one",
            ex,
            PlaybookRequest(
                playbook=PB / "fail-on-purpose.yml", hosts=hosts, extra_vars={"fail_on": "ans-n2"}
            ),
            work,
        )
        record(
            "rescue_loop",
            ex,
            PlaybookRequest(playbook=PB / "rescue.yml", hosts=hosts, extra_vars={"fail_on": "ans-n3"}),
            work,
        )
        record(
            "check_diff",
            ex,
            PlaybookRequest(
                playbook=Path("cni-config.yml"),
                hosts=hosts[:2],
                check=True,
                diff=True,
                extra_vars={"cni_file": "10-calico.conflist", "cni_content": {"name": "k8s-pod-network"}},
            ),
            work,
        )
        record("node_facts", ex, PlaybookRequest(playbook=Path("node-facts.yml"), hosts=hosts[:1]), work)
        record("timeout", ex, PlaybookRequest(playbook=PB / "sleep.yml", hosts=hosts[:1], timeout=2), work)
        farm.stop_sshd("ans-n3")
        record("unreachable", ex, PlaybookRequest(playbook=Path("ping.yml"), hosts=hosts), work)


if __name__ == "__main__":
    main()
