"""Bad input everywhere (issue 8): the table of bad CLI uses, each run as ``python -m migrator.cli.main``,
plus a bounded hypothesis pass over the plan loader. The compass figure "bad inputs tried".

Run::

    PYTHONPATH=. python bench/bad_inputs.py                 # the table + 200 fuzzed plans
    PYTHONPATH=. python bench/bad_inputs.py --fuzz 2000     # a longer fuzz pass
    PYTHONPATH=. python bench/bad_inputs.py --lab bi1       # also an unreachable node in that (up) lab

Every case must end with the exit code of README's table (2 for bad use, plans, files, run ids, locks;
3 when nodes need attention), print no traceback, and print ONE line on stderr, ``error: ...``, that
names the thing (file, field, key, node, run id) and, where there is one, the fix. Cases that need the
kube target run against the fake API server (:mod:`migrator.testing.kube_server`, 127.0.0.1). The
unreachable-node case only runs with a lab that is up (an inventory host in the lab's own underlay that
does not exist): nothing is ever probed outside the lab's namespaces.

The fuzz pass feeds random YAML texts, random documents and mutated copies of ``plans/examples/hello.yaml``
to :func:`migrator.plan.loader.load_plan_text`: each must load or raise :class:`PlanError` whose every
problem names a line and column, within one second of CPU time.

``run() -> dict``: ``tried``, ``passed``, ``failures`` (list of str), ``cli`` and ``fuzz`` breakdowns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELLO = ROOT / "plans" / "examples" / "hello.yaml"
CLI_TIMEOUT = 120.0


@dataclass(frozen=True)
class Case:
    """One bad input: the CLI arguments, the exit code README documents, what stderr must name."""

    name: str
    args: tuple[str, ...]
    code: int = 2
    expect: tuple[str, ...] = ()
    lines: int = 1  # at most this many stderr lines (a ping also prints its summary)
    argv: tuple[str, ...] = ()  # a whole command instead of ``python -m migrator.cli.main ARGS``
    needs: str = ""  # "kube": the fake API server; "lab": a lab that is up


@dataclass
class Outcome:
    case: Case
    code: int
    stderr: str
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Context:
    """Files the cases point at, in one temporary folder."""

    tmp: Path
    home: Path
    kubeconfig: Path | None = None
    lab: str | None = None
    lab_inventory: Path | None = None
    ghost_ip: str | None = None
    # the unreadable plan lives in a folder everyone can enter (pytest's tmp folders are 0700)
    open_dir: Path | None = None

    def p(self, name: str) -> str:
        return str(self.tmp / name)

    @property
    def locked_plan(self) -> Path:
        return (self.open_dir or self.tmp) / "locked" / "plan.yaml"

    def cleanup(self) -> None:
        if self.open_dir is not None:
            shutil.rmtree(self.open_dir, ignore_errors=True)
            self.open_dir = None


# ----------------------------------------------------------------------------------------- fixtures

INVENTORY = """\
[workers]
{hosts}

[all:vars]
ansible_user=root
ansible_ssh_private_key_file={key}
"""

UNKNOWN_ACTION_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: typo}
spec:
  stages:
    - name: s
      steps:
        - {name: a, action: demo.tuch, args: {marker: a}}
"""

UNKNOWN_FIELD_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: typo}
spec:
  stages:
    - name: s
      steps:
        - {name: a, action: demo.touch, args: {marker: a}, tiemout: 5s}
"""

DUPLICATE_STAGE_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: dup}
spec:
  stages:
    - name: s
      steps: [{name: a, action: demo.touch, args: {marker: a}}]
    - name: s
      steps: [{name: b, action: demo.touch, args: {marker: b}}]
"""

TYPED_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: typed}
spec:
  params:
    pause: {type: duration, default: 1s}
    wave: {type: integer, default: 1}
  stages:
    - name: s
      steps:
        - {name: a, action: demo.sleep, args: {duration: "${{ params.pause }}"}}
"""

# reading the plan as an unprivileged user (root reads every file): warm the imports as root, then drop
UNREADABLE_AS_NOBODY = """\
import contextlib, io, os, sys
import migrator.testing.fake
import migrator.cli.main as m
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for args in (["plan", sys.argv[2], "-t", "fake"], ["plan", sys.argv[1] + ".nope", "-t", "fake"]):
        with contextlib.suppress(SystemExit):
            m.run(args)
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
m.run(["plan", sys.argv[1], "-t", "fake"])
"""


def make_files(ctx: Context) -> None:
    t = ctx.tmp
    (t / "adir").mkdir()
    (t / "bad-yaml.yaml").write_text("apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: [x\n")
    (t / "binary.yaml").write_bytes(bytes(range(256)) * 2)
    (t / "unknown-action.yaml").write_text(UNKNOWN_ACTION_PLAN)
    (t / "unknown-field.yaml").write_text(UNKNOWN_FIELD_PLAN)
    (t / "duplicate-stage.yaml").write_text(DUPLICATE_STAGE_PLAN)
    (t / "list.yaml").write_text("- just\n- a list\n")
    (t / "typed.yaml").write_text(TYPED_PLAN)
    (t / "empty-inventory-dir").mkdir()
    ctx.open_dir = Path(tempfile.mkdtemp(prefix="migrator-bad-inputs-open-"))
    ctx.open_dir.chmod(0o755)
    locked = ctx.locked_plan
    locked.parent.mkdir(mode=0o755)
    shutil.copy(HELLO, locked)
    locked.chmod(0o000)
    (t / "bad-kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters: [\n")
    (t / "list-kubeconfig").write_text("- 1\n- 2\n")
    (t / "bad-inventory.ini").write_text("[workers\nnode1 ansible_host=\n")
    key = t / "ssh" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o644)
    hosts = "\n".join(f"node{i} ansible_host=127.0.0.{i}" for i in range(1, 5))
    (t / "inv-key-0644.ini").write_text(INVENTORY.format(hosts=hosts, key=key))
    good = t / "ssh" / "id_ok"
    good.write_text(key.read_text())
    good.chmod(0o600)
    (t / "inv-ok.ini").write_text(INVENTORY.format(hosts=hosts, key=good))
    (t / "inv-no-key.ini").write_text(INVENTORY.format(hosts=hosts, key=t / "ssh" / "missing_key"))
    if ctx.lab_inventory is not None and ctx.ghost_ip is not None:
        text = ctx.lab_inventory.read_text()
        line = next(ln for ln in text.splitlines() if ln.startswith("node2 "))
        ghost = line.replace("node2 ", "ghost ", 1).split(" ansible_host=", 1)
        rest = ghost[1].split(" ", 1)[1]
        (t / "inv-ghost.ini").write_text(f"[workers]\n{ghost[0]} ansible_host={ctx.ghost_ip} {rest}\n")


def cases(ctx: Context) -> list[Case]:
    """The table. Names are stable (tests and the bench report use them)."""
    p, h = ctx.p, str(HELLO)
    fake = ("-t", "fake")
    kc = ("--kubeconfig", str(ctx.kubeconfig)) if ctx.kubeconfig else ()

    def kube_apply(inventory: str) -> tuple[str, ...]:
        """``apply`` hello.yaml on the fake kube target with that inventory (of the temporary folder)."""
        return (*kc, "--inventory", p(inventory), "apply", h, "-t", "kube", "--yes")

    def ping(inventory: str, *more: str) -> tuple[str, ...]:
        return ("nodes", "ping", "-i", p(inventory), *more)

    table = [
        # ---- CLI use
        Case("unknown-command", ("aply", h), expect=("No such command 'aply'", "migrator --help")),
        Case("unknown-option", ("apply", h, "--yse"), expect=("--yse", "migrator apply --help")),
        Case("missing-argument", ("status",), expect=("Missing argument", "migrator status --help")),
        Case("bad-output-choice", ("plan", h, *fake, "-o", "xml"), expect=("xml",)),
        Case(
            "set-without-equals",
            ("apply", h, "--yes", *fake, "--set", "fail_at"),
            expect=("--set", "NAME=VALUE"),
        ),
        Case("set-empty-name", ("apply", h, "--yes", *fake, "--set", "=x"), expect=("--set", "'=x'")),
        Case("set-unknown-param", ("apply", h, "--yes", *fake, "--set", "nope=1"), expect=("nope",)),
        Case("apply-without-yes-no-tty", ("apply", h, *fake), expect=("--yes",)),
        # ---- targets
        Case("unknown-target", ("plan", h, "-t", "mars"), expect=("'mars'", "lab, kube, fake")),
        Case("empty-target-kind", ("plan", h, "-t", ":x"), expect=("':x'",)),
        Case(
            "lab-not-up",
            ("apply", h, "--yes", "-t", "lab:nosuch"),
            expect=("'nosuch' is not up", "migrator lab up"),
        ),
        Case("verify-lab-not-up", ("verify", "-t", "lab:nosuch"), expect=("'nosuch' is not up",)),
        # ---- plan files
        Case(
            "plan-missing",
            ("apply", p("missing.yaml"), "--yes", *fake),
            expect=(p("missing.yaml"), "no such plan"),
        ),
        Case("plan-is-a-directory", ("apply", p("adir"), "--yes", *fake), expect=(p("adir"), "directory")),
        Case("plan-under-a-file", ("plan", str(HELLO / "x.yaml"), *fake), expect=("x.yaml",)),
        Case(
            "plan-unreadable-io-error",
            ("plan", "/proc/self/mem", *fake),
            expect=("/proc/self/mem", "cannot read"),
        ),
        Case(
            "plan-unreadable-permissions",
            (),
            expect=("plan.yaml", "not readable"),
            # root reads any file: drop to nobody for this one (as a non-root user, chmod 000 is enough)
            argv=(sys.executable, "-c", UNREADABLE_AS_NOBODY, str(ctx.locked_plan), h)
            if os.geteuid() == 0
            else (sys.executable, "-m", "migrator.cli.main", "plan", str(ctx.locked_plan), *fake),
        ),
        Case("plan-not-utf8", ("plan", p("binary.yaml"), *fake), expect=("binary.yaml:", "UTF-8")),
        Case("plan-empty", ("apply", "/dev/null", "--yes", *fake), expect=("/dev/null:1:1", "empty")),
        Case(
            "plan-bad-yaml",
            ("apply", p("bad-yaml.yaml"), "--yes", *fake),
            expect=("bad-yaml.yaml:4:1", "YAML"),
        ),
        Case("plan-a-list", ("plan", p("list.yaml"), *fake), expect=("list.yaml:1:1",)),
        Case(
            "plan-unknown-action",
            ("apply", p("unknown-action.yaml"), "--yes", *fake),
            expect=("unknown-action.yaml:8:", "demo.tuch"),
        ),
        Case(
            "plan-unknown-field",
            ("plan", p("unknown-field.yaml"), *fake),
            expect=("unknown-field.yaml:8:", "tiemout"),
        ),
        Case(
            "plan-duplicate-stage",
            ("plan", p("duplicate-stage.yaml"), *fake),
            expect=("duplicate-stage.yaml:8:", "'s'"),
        ),
        Case(
            "set-wrong-type-duration",
            ("plan", p("typed.yaml"), *fake, "--set", "pause=soon"),
            expect=("pause", "soon"),
        ),
        Case(
            "set-wrong-type-int",
            ("plan", p("typed.yaml"), *fake, "--set", "wave=two"),
            expect=("wave", "two"),
        ),
        # ---- run ids
        Case(
            "status-no-such-run",
            ("status", "20990101-nosuch"),
            expect=("no run '20990101-nosuch'", "migrator runs"),
        ),
        Case("resume-no-such-run", ("resume", "nosuch"), expect=("no run 'nosuch'",)),
        Case("rollback-no-such-run", ("rollback", "nosuch"), expect=("no run 'nosuch'",)),
        Case("report-no-such-run", ("report", "nosuch"), expect=("no run 'nosuch'",)),
        Case("run-id-is-a-path", ("status", "../etc"), expect=("'../etc' is not a run id",)),
        # ---- kubeconfig
        Case(
            "kubeconfig-missing",
            ("--kubeconfig", p("nokube"), "plan", h, "-t", "kube"),
            expect=(p("nokube"), "no such file"),
        ),
        Case(
            "kubeconfig-malformed",
            ("--kubeconfig", p("bad-kubeconfig"), "plan", h, "-t", "kube"),
            expect=("bad-kubeconfig", "line 4"),
        ),
        Case(
            "kubeconfig-a-list",
            ("--kubeconfig", p("list-kubeconfig"), "plan", h, "-t", "kube"),
            expect=("list-kubeconfig",),
        ),
        Case(
            "kubeconfig-a-directory",
            ("--kubeconfig", p("adir"), "plan", h, "-t", "kube"),
            expect=(p("adir"),),
        ),
        Case(
            "kubeconfig-unknown-context",
            (*kc, "plan", h, "-t", "kube:nosuch"),
            expect=("no context 'nosuch'", "the contexts are:"),
            needs="kube",
        ),
        # ---- inventory and SSH keys (kube target: the inventory is the operator's)
        Case(
            "inventory-missing",
            ("--inventory", p("noinv.ini"), *kc, "apply", h, "-t", "kube", "--yes"),
            expect=("noinv.ini", "no such file"),
        ),
        Case(
            "inventory-malformed",
            kube_apply("bad-inventory.ini"),
            expect=("bad-inventory.ini", "parse"),
            needs="kube",
        ),
        Case(
            "ssh-key-mode-0644",
            kube_apply("inv-key-0644.ini"),
            expect=("id_ed25519", "0644", "chmod 600"),
            needs="kube",
        ),
        Case(
            "ssh-key-missing",
            kube_apply("inv-no-key.ini"),
            expect=("missing_key", "does not exist"),
            needs="kube",
        ),
        Case("ping-inventory-missing", ping("noinv.ini"), expect=("noinv.ini", "does not exist")),
        Case("ping-inventory-malformed", ping("bad-inventory.ini"), expect=("bad-inventory.ini", "parse")),
        Case("ping-inventory-empty-dir", ping("empty-inventory-dir"), expect=("empty-inventory-dir",)),
        Case("ping-ssh-key-mode-0644", ping("inv-key-0644.ini"), expect=("id_ed25519", "chmod 600")),
        Case(
            "ping-node-not-in-inventory",
            ping("inv-ok.ini", "--nodes", "ghost"),
            expect=("ghost", "inv-ok.ini"),
        ),
    ]
    if ctx.ghost_ip:
        table.append(
            Case(
                "ping-unreachable-node",
                ping("inv-ghost.ini", "--timeout", "60"),
                code=3,
                lines=2,
                expect=("ghost", ctx.ghost_ip, "unreachable", "sshd"),
                needs="lab",
            )
        )
    return table


# ------------------------------------------------------------------------------------------ running


def _env(ctx: Context) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "MIGRATOR_INVENTORY", "MIGRATOR_TARGET")
    }
    env.update(
        {
            "MIGRATOR_HOME": str(ctx.home),
            "MIGRATOR_FAKE_STATE": str(ctx.tmp / "fake.json"),
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    return env


def check(case: Case, ctx: Context) -> Outcome:
    argv = list(case.argv) or [sys.executable, "-m", "migrator.cli.main", *case.args]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            env=_env(ctx),
            cwd=ctx.tmp,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(case, -1, "", CLI_TIMEOUT, [f"no answer within {CLI_TIMEOUT:g}s"])
    out = Outcome(case, proc.returncode, proc.stderr, time.monotonic() - start)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode != case.code:
        out.problems.append(f"exit {proc.returncode}, expected {case.code}")
    if "Traceback" in proc.stderr + proc.stdout:
        out.problems.append("a traceback")
    if not lines:
        out.problems.append("nothing on stderr")
    elif not lines[0].startswith("error: "):
        out.problems.append(f"stderr does not start with 'error: ': {lines[0][:120]!r}")
    if len(lines) > case.lines:
        out.problems.append(f"{len(lines)} stderr lines (at most {case.lines})")
    out.problems += [f"stderr does not name {e!r}" for e in case.expect if e not in proc.stderr]
    if out.problems:
        out.problems.append(f"stderr: {proc.stderr.strip()[:400]!r}")
    return out


@contextlib.contextmanager
def fake_kube(ctx: Context) -> Iterator[None]:
    """The fake API server on 127.0.0.1 with a kubeconfig in ``ctx.tmp``."""
    from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, add_nodes  # noqa: PLC0415

    server = FakeApiServer(FakeKubeApi())
    server.api.token = "bad-inputs-token"
    add_nodes(server.api)
    with server:
        ctx.kubeconfig = server.write_kubeconfig(
            ctx.tmp / "kubeconfig", context="fake", token=server.api.token
        )
        yield


def lab_context(ctx: Context, lab: str, home: Path | None = None) -> None:
    """Use lab ``lab`` (which must be up, in ``home`` or ``$MIGRATOR_HOME``) for the unreachable-node
    case: an address of its underlay that no node has."""
    if home is None:
        env_home = os.environ.get("MIGRATOR_HOME")
        home = Path(env_home) if env_home else Path.home() / ".local" / "state" / "migrator"
    inventory = home / "labs" / lab / "inventory.ini"
    if not inventory.exists():
        raise SystemExit(f"lab {lab!r} has no inventory at {inventory}: is it up (same MIGRATOR_HOME)?")
    ips = [
        part.split("=", 1)[1] for part in inventory.read_text().split() if part.startswith("ansible_host=")
    ]
    prefix = ips[0].rsplit(".", 1)[0]
    ctx.lab, ctx.lab_inventory, ctx.ghost_ip = lab, inventory, f"{prefix}.99"


def run_cli(ctx: Context, *, workers: int = 3, only: Sequence[str] = ()) -> list[Outcome]:
    table = [c for c in cases(ctx) if not only or c.name in only]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda c: check(c, ctx), table))


# --------------------------------------------------------------------------------------------- fuzz


def fuzz(examples: int = 200, seed: int = 0) -> dict[str, Any]:
    """``examples`` hypothesis-generated plans through the loader (a third each: token soup, random
    documents, mutations of hello.yaml). Each loads or raises a PlanError naming line and column, in
    under a second of CPU time."""
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415
    from hypothesis import strategies as st  # noqa: PLC0415
    from ruamel.yaml import YAML  # noqa: PLC0415

    from tests.fuzzplans import (  # noqa: PLC0415
        DOCUMENTS,
        MUTATIONS,
        SCALARS,
        SOUPS,
        dump,
        load_checked,
        mutate,
    )

    hello: dict[str, Any] = YAML(typ="safe").load(HELLO.read_text())
    stats: dict[str, Any] = {"tried": 0, "passed": 0, "valid": 0, "max_load_s": 0.0, "failures": []}

    def load(text: str) -> None:
        stats["tried"] += 1
        try:
            result = load_checked(text)
        except Exception as exc:  # that is the finding
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = result.problem
            stats["valid"] += result.valid
            stats["max_load_s"] = max(stats["max_load_s"], result.seconds)
        if problem:
            stats["failures"].append(f"fuzz: {problem[:300]} (input {text[:80]!r})")
        else:
            stats["passed"] += 1

    def mutated(rnd: random.Random, value: Any) -> str:
        data = hello
        for _ in range(rnd.randint(1, 3)):
            data = mutate(data, rnd, rnd.choice(MUTATIONS), value)
        return dump(data)

    each = max(1, examples // 3)
    opts = settings(
        max_examples=each,
        deadline=None,
        database=None,
        derandomize=seed == 0,
        suppress_health_check=list(HealthCheck),
    )

    @opts
    @given(SOUPS)
    def soup(parts: list[str]) -> None:
        load("".join(parts))

    @opts
    @given(DOCUMENTS)
    def documents(data: dict[str, Any]) -> None:
        load(dump(data))

    @opts
    @given(st.integers(min_value=0, max_value=2**32), SCALARS)
    def mutations(n: int, value: Any) -> None:
        load(mutated(random.Random(n + seed), value))

    for test in (soup, documents, mutations):
        test()
    return stats


# -------------------------------------------------------------------------------------------- report


def run(lab: str | None = None, fuzz_examples: int = 200, workers: int = 3) -> dict[str, Any]:
    """The bad-input table (and the lab case when ``lab`` is up), then the fuzz pass."""
    lab = lab or os.environ.get("MIGRATOR_BAD_INPUT_LAB") or None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="migrator-bad-inputs-") as tmp:
        folder = Path(tmp)
        ctx = Context(tmp=folder, home=folder / "home")
        if lab:
            lab_context(ctx, lab)
        try:
            make_files(ctx)
            with fake_kube(ctx):
                outcomes = run_cli(ctx, workers=workers)
        finally:
            ctx.cleanup()
    fuzzed = fuzz(fuzz_examples)
    failures = [f"{o.case.name}: {'; '.join(o.problems)}" for o in outcomes if not o.ok] + fuzzed["failures"]
    cli_passed = sum(o.ok for o in outcomes)
    return {
        "tried": len(outcomes) + fuzzed["tried"],
        "passed": cli_passed + fuzzed["passed"],
        "failures": failures,
        "cli": {
            "tried": len(outcomes),
            "passed": cli_passed,
            "cases": {
                o.case.name: {"ok": o.ok, "exit": o.code, "seconds": round(o.seconds, 2)} for o in outcomes
            },
        },
        "fuzz": {k: fuzzed[k] for k in ("tried", "passed", "valid", "max_load_s")},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", help="a lab that is up: adds the unreachable-node case")
    ap.add_argument("--fuzz", type=int, default=200, help="plans for the fuzz pass")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = ap.parse_args(argv)
    result = run(args.lab, args.fuzz)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, row in result["cli"]["cases"].items():
            print(f"{'ok  ' if row['ok'] else 'FAIL'} exit {row['exit']:>3}  {row['seconds']:5.1f}s  {name}")
        fz = result["fuzz"]
        slowest = f"slowest load {fz['max_load_s']:.3f}s CPU"
        print(f"fuzz: {fz['passed']}/{fz['tried']} ({fz['valid']} valid plans), {slowest}")
        for failure in result["failures"]:
            print(f"FAILED {failure}")
        print(f"bad inputs tried {result['tried']}, passed {result['passed']} ({result['seconds']}s)")
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
