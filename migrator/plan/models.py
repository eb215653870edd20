"""Plan models: pure pydantic, frozen, ``extra="forbid"``, discriminated unions on step and check types.

A plan file looks like this (see ``plans/examples/hello.yaml``)::

    apiVersion: migrator/v1
    kind: Plan
    metadata: {name: hello, description: ...}
    spec:
      params: {fail_at: {type: string, default: ""}}
      rollback: on-failure
      preflight: [ {type: demo.markers, absent: [greet]} ]
      stages:
        - name: greet
          steps:
            - {action: demo.touch, args: {marker: greet, fail_when: "${{ params.fail_at }}"}}
          verify: [ {type: demo.markers, present: [greet]} ]
        - name: per-node
          for_each: {nodes: {exclude_control_plane: true}, order: workers-first, max_unavailable: 2}
          steps:
            - {action: demo.touch, args: {marker: "node-${{ node.name }}"}, timeout: 30s}

Templates: ``${{ params.NAME }}`` is replaced when the plan is loaded (a scalar that is only a template
takes the parameter's typed value); ``${{ node.name }}``, ``${{ node.address }}`` and ``${{ run.id }}``
stay as text and are rendered by the engine for each node.

The catalogue of step actions and check types lives here so that the JSON Schema is complete; their
implementations are registered in ``migrator.actions`` and ``migrator.checks`` under the same names.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from migrator.plan.types import Cidr, Duration, LabelSelector, Percentage

API_VERSION = "migrator/v1"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# ------------------------------------------------------------------------------------------- policies


class RollbackPolicy(StrEnum):
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    NEVER = "never"


class FailurePolicy(StrEnum):
    ABORT = "abort"  # stop the run; the plan's rollback policy applies
    CONTINUE = "continue"  # record the failure and go on with the next stage


class NodeOrder(StrEnum):
    WORKERS_FIRST = "workers-first"  # workers by name, then control-plane nodes by name
    NAME = "name"
    AS_LISTED = "as-listed"  # the order of selector.names


class RetryPolicy(Model):
    attempts: int = Field(1, ge=1, le=100, description="Total attempts, 1 means no retry")
    backoff: Duration = Field(1.0, description="First wait between attempts")
    max_backoff: Duration = Field(30.0, description="Longest wait between attempts")
    multiplier: float = Field(2.0, ge=1.0, le=10.0)


# ---------------------------------------------------------------------------------------------- params


class ParamType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DURATION = "duration"
    LIST = "list"


class ParamSpec(Model):
    type: ParamType = ParamType.STRING
    default: Any = None
    description: str = ""
    enum: list[Any] | None = None
    secret: bool = Field(False, description="Never written to journals, logs or reports")


# ---------------------------------------------------------------------------------------- node selection


class NodeSelector(Model):
    names: list[str] | None = Field(None, description="Only these nodes")
    labels: LabelSelector | None = None
    exclude: list[str] = Field(default_factory=list, description="Never these nodes")
    exclude_control_plane: bool = False
    count: int | None = Field(None, ge=1, description="Pick this many of the matching nodes")
    percent: Percentage | None = Field(None, description="Pick this share of the matching nodes")
    seed: int = Field(0, description="Seed of the sampling by count or percent")

    @model_validator(mode="after")
    def _count_xor_percent(self) -> NodeSelector:
        if self.count is not None and self.percent is not None:
            raise ValueError("percent: give either count or percent, not both")
        return self


class ForEachNodes(Model):
    nodes: NodeSelector = Field(default_factory=NodeSelector)
    order: NodeOrder = NodeOrder.WORKERS_FIRST
    max_unavailable: int | Percentage = Field(1, description="Wave size: a node count or a percentage")

    @field_validator("max_unavailable", mode="before")
    @classmethod
    def _count_or_percentage(cls, value: Any) -> Any:
        # one clear message instead of one per branch of the union
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.strip().endswith("%"))
        ):
            raise ValueError("expected a node count like 2 or a percentage like 25%")
        return value

    @field_validator("max_unavailable")
    @classmethod
    def _positive(cls, value: int | float) -> int | float:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1")
        if isinstance(value, float) and value <= 0:
            raise ValueError("must be more than 0%")
        return value


# ----------------------------------------------------------------------------------------------- steps


class StepBase(Model):
    name: str | None = Field(None, description="Defaults to the action name")
    timeout: Duration = Field(300.0, description="Time allowed for one attempt")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    undo: Step | None = Field(None, description="Explicit compensation; replaces the action's own undo")
    no_undo: bool = Field(False, description="Declare that this step needs no compensation")

    @property
    def display_name(self) -> str:
        return self.name or str(getattr(self, "action", "step"))

    @model_validator(mode="after")
    def _undo_is_flat(self) -> StepBase:
        if self.undo is not None and self.undo.undo is not None:
            raise ValueError("undo.undo: an undo step cannot have an undo of its own")
        if self.undo is not None and self.no_undo:
            raise ValueError("no_undo: give either undo or no_undo, not both")
        return self


# demo actions: built in, act on files in the run folder, used by plans/examples/hello.yaml and tests


class DemoTouchArgs(Model):
    marker: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.${}\- ]+$")
    fail_when: str = Field("", description="Fail instead when this equals the rendered marker")
    fail_undo: bool = Field(False, description="Make the undo of this step fail (tests exit code 3)")


class DemoTouchStep(StepBase):
    action: Literal["demo.touch"]
    args: DemoTouchArgs


class DemoSleepArgs(Model):
    duration: Duration


class DemoSleepStep(StepBase):
    action: Literal["demo.sleep"]
    args: DemoSleepArgs


class DemoFailArgs(Model):
    message: str = "failed on purpose"
    temporary: bool = Field(False, description="Raise a retryable error instead of a permanent one")


class DemoFailStep(StepBase):
    action: Literal["demo.fail"]
    args: DemoFailArgs = Field(default_factory=DemoFailArgs)


# node actions: through the cluster port, in a for_each stage (node = the current node)


class EmptyArgs(Model):
    pass


class NodeCordonStep(StepBase):
    action: Literal["node.cordon"]
    args: EmptyArgs = Field(default_factory=EmptyArgs)


class NodeUncordonStep(StepBase):
    action: Literal["node.uncordon"]
    args: EmptyArgs = Field(default_factory=EmptyArgs)


class NodeDrainArgs(Model):
    delete_emptydir_data: bool = False
    grace_period: Duration | None = None


class NodeDrainStep(StepBase):
    action: Literal["node.drain"]
    args: NodeDrainArgs = Field(default_factory=NodeDrainArgs)


class NodeLabelArgs(Model):
    labels: dict[str, str | None] = Field(..., description="A null value removes the label")


class NodeLabelStep(StepBase):
    action: Literal["node.label"]
    args: NodeLabelArgs


class NodeRestartPodsStep(StepBase):
    action: Literal["node.restart-pods"]
    args: EmptyArgs = Field(default_factory=EmptyArgs)


# ansible


class AnsiblePlaybookArgs(Model):
    playbook: str = Field(..., description="Path relative to playbooks/ or absolute")
    vars: dict[str, Any] = Field(default_factory=dict)
    secret_vars: list[str] = Field(default_factory=list, description="Names of vars never logged")
    become: bool = False
    undo_playbook: str | None = None
    undo_vars: dict[str, Any] = Field(default_factory=dict)
    forks: int = Field(20, ge=1, le=500)


class AnsiblePlaybookStep(StepBase):
    action: Literal["ansible.playbook"]
    args: AnsiblePlaybookArgs


# CNI migration actions (issue 6): migrator.actions.cni, through the CniOps port and the node executor


SOURCE_CNI_PATTERN = r"^(flannel|canal|weave|\$\{\{.*\}\})$"
SOURCE_CNI_DOC = "The CNI migrated from: flannel or canal (the preflight refuses another one)"
CIDR_PATTERN = r"^(\d{1,3}(\.\d{1,3}){3}/\d{1,2}|\$\{\{.*\}\})$"


class CniPreflightArgs(Model):
    source: str = Field(
        "flannel", pattern=SOURCE_CNI_PATTERN, description=SOURCE_CNI_DOC + "; weave (dual overlay)"
    )
    expect_vni: int | None = Field(None, description="Refuse unless the source's VXLAN VNI is this")
    expect_port: int | None = Field(None, description="Refuse unless the source's VXLAN UDP port is this")
    calico_cidr: str | None = Field(
        None,
        pattern=CIDR_PATTERN,
        description="weave: Calico's new pod CIDR; refused when it overlaps Weave's range, a node's address"
        " or the service range",
    )
    service_cidr: str = Field("10.96.0.0/12", pattern=CIDR_PATTERN, description="The cluster's service range")
    block_size: int = Field(
        26, ge=20, le=32, description="weave: Calico's IPAM block size (a block per node)"
    )


class CniPreflightStep(StepBase):
    action: Literal["cni.preflight"]
    args: CniPreflightArgs = Field(default_factory=CniPreflightArgs)


class CniInstallCalicoArgs(Model):
    source: str = Field("flannel", pattern=SOURCE_CNI_PATTERN, description=SOURCE_CNI_DOC)
    mode: Literal["vxlan", "bgp"] = "vxlan"
    peering: str = Field(
        "full-mesh",
        pattern=r"^(full-mesh|route-reflector|\$\{\{.*\}\})$",
        description="full-mesh or route-reflector",
    )
    reflectors: str = Field("", description="Route reflector node names, comma-separated")
    manifest: str = Field("", description="The user's Calico manifest (real clusters; server-side apply)")


class CniInstallCalicoStep(StepBase):
    action: Literal["cni.install-calico"]
    args: CniInstallCalicoArgs = Field(default_factory=CniInstallCalicoArgs)


class CniSwitchNodeArgs(Model):
    source: str = Field("flannel", pattern=SOURCE_CNI_PATTERN, description=SOURCE_CNI_DOC)
    fail_at_node: str = Field("", description="Fail the switch on this node (tests the rollback)")
    ready_timeout: Duration = Field(60.0, description="Longest wait for the new CNI to be ready")
    drain_timeout: Duration = Field(120.0, description="Drain bound when swapping back (undo)")


class CniSwitchNodeStep(StepBase):
    action: Literal["cni.switch-node"]
    args: CniSwitchNodeArgs = Field(default_factory=CniSwitchNodeArgs)


class CniDualInstallArgs(Model):
    """Calico beside the source on every node: another pod CIDR, another VXLAN port and VNI (the dual-overlay
    method; the source keeps running until ``cni.dual-finalize``)."""

    source: Literal["weave"] = "weave"
    calico_cidr: str = Field(..., pattern=CIDR_PATTERN, description="Calico's pod CIDR (not the source's)")
    block_size: int = Field(26, ge=20, le=32, description="Calico's IPAM block size")
    vxlan_port: int = Field(4789, ge=1, le=65535, description="Calico's VXLAN UDP port (Weave's is 6784)")
    vxlan_vni: int = Field(4096, ge=1, le=16777215, description="Calico's VXLAN network identifier")
    cni_conf_name: str = Field(
        "20-calico.conflist",
        pattern=r"^[A-Za-z0-9._-]+\.(conflist|conf)$",
        description="Calico's CNI config file, sorted after the source's: it waits for the node's switch",
    )
    ready_timeout: Duration = Field(120.0, description="Longest wait for calico-node on every node")
    manifest: str = Field("", description="The user's Calico manifest (real clusters; server-side apply)")


class CniDualInstallStep(StepBase):
    action: Literal["cni.dual-install"]
    args: CniDualInstallArgs


class CniDualSwitchNodeArgs(Model):
    source: Literal["weave"] = "weave"
    fail_at_node: str = Field("", description="Fail the switch on this node (tests the rollback)")
    ready_timeout: Duration = Field(60.0, description="Longest wait for calico-node on the node")
    drain_timeout: Duration = Field(120.0, description="Drain bound when switching back (undo)")


class CniDualSwitchNodeStep(StepBase):
    action: Literal["cni.dual-switch-node"]
    args: CniDualSwitchNodeArgs = Field(default_factory=CniDualSwitchNodeArgs)


class CniDualFinalizeArgs(Model):
    source: Literal["weave"] = "weave"
    calico_cidr: str = Field(..., pattern=CIDR_PATTERN, description="Calico's pod CIDR (for the undo)")


class CniDualFinalizeStep(StepBase):
    action: Literal["cni.dual-finalize"]
    args: CniDualFinalizeArgs


class CniFinalizeArgs(Model):
    source: str = Field("flannel", pattern=SOURCE_CNI_PATTERN, description=SOURCE_CNI_DOC)


class CniFinalizeStep(StepBase):
    action: Literal["cni.finalize"]
    args: CniFinalizeArgs = Field(default_factory=CniFinalizeArgs)


class CniCalicoModeArgs(Model):
    mode: str = Field(..., pattern=r"^(vxlan|bgp|\$\{\{.*\}\})$", description="vxlan or bgp")
    ready_timeout: Duration = 60.0


class CniRemoveVxlanArgs(Model):
    mode: str = Field("bgp", pattern=r"^(vxlan|bgp|\$\{\{.*\}\})$", description="vxlan: nothing to remove")


class CniCalicoModeStep(StepBase):
    action: Literal["cni.calico-mode"]
    args: CniCalicoModeArgs


class CniRemoveVxlanStep(StepBase):
    action: Literal["cni.remove-vxlan"]
    args: CniRemoveVxlanArgs = Field(default_factory=CniRemoveVxlanArgs)


# network faults (migrator.actions.faults): installed on nodes through Ansible, each with a duration and a
# dead man's switch on the node (record under /run/migrator/faults and a detached expiry revert)


class FaultTargets(Model):
    """Blast radius: which nodes get the fault. Seeded sampling without replacement by count or percent."""

    names: list[str] | None = Field(None, description="Only these nodes")
    labels: LabelSelector | None = None
    exclude: list[str] = Field(default_factory=list, description="Never these nodes")
    count: int | None = Field(None, ge=1, description="Pick this many of the matching nodes")
    percent: Percentage | None = Field(None, description="Pick this share of the matching nodes")
    seed: int = Field(0, description="Seed of the sampling by count or percent")
    allow_control_plane: bool = Field(False, description="Control-plane nodes may be faulted")
    max_share: Percentage = Field(0.5, description="Refuse to fault more than this share of the cluster")

    @model_validator(mode="after")
    def _count_xor_percent(self) -> FaultTargets:
        if self.count is not None and self.percent is not None:
            raise ValueError("percent: give either count or percent, not both")
        return self


class FaultDirection(StrEnum):
    IN = "in"
    OUT = "out"
    BOTH = "both"


class FaultProtocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ALL = "all"


class LossMechanism(StrEnum):
    AUTO = "auto"  # netem where the kernel has it, else iptables statistic
    NETEM = "netem"
    IPTABLES = "iptables"


class FaultArgsBase(Model):
    targets: FaultTargets | None = Field(
        None, description="Blast radius; default: the stage's current node (in a for_each stage)"
    )
    duration: Duration = Field(..., description="How long the fault lasts")
    grace: Duration = Field(10.0, description="Added to the duration for the expiry revert on the node")
    wait: bool = Field(
        True,
        description="Hold the step for the duration, then revert; false: return at once and let the"
        " fault expire (or the step's undo revert it)",
    )
    interface: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,15}$", description="Default: the interface of the node's address"
    )
    become: bool = Field(False, description="Run the node commands with Ansible become (SSH user not root)")
    lease: Duration | None = Field(
        None,
        description="The fault ends this long after migrator stops renewing its heartbeat on the node"
        " (killed, stopped, or its SSH path cut), whatever the duration; 0: the TTL alone. Default: 5s"
        " with wait: true; with wait: false the TTL alone (no migrator is left to renew it after the run)",
    )

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("a fault lasts more than 0s and at most 1h")
        return value

    @field_validator("lease")
    @classmethod
    def _lease_bounded(cls, value: float | None) -> float | None:
        if value is not None and not (value == 0 or 3 <= value <= 300):
            raise ValueError("a lease is 0 (off) or between 3s and 300s")
        return value


class FaultLossArgs(FaultArgsBase):
    percent: Percentage = Field(..., description="Share of the node's egress packets dropped")
    correlation: Percentage | None = Field(None, description="netem only")
    mechanism: LossMechanism = LossMechanism.AUTO


class FaultDelayArgs(FaultArgsBase):
    delay: Duration = Field(..., description="Added egress latency (netem)")
    jitter: Duration | None = None
    correlation: Percentage | None = None
    duplicate: Percentage | None = None
    corrupt: Percentage | None = None


class FaultBandwidthArgs(FaultArgsBase):
    rate: str = Field(..., pattern=r"^[0-9]+(\.[0-9]+)?([kmg]?bit|[kmg]?bps)$", description="e.g. 1mbit")
    burst: str = Field("32kbit", pattern=r"^[0-9]+([kmg]?b|[kmg]?bit)?$")
    latency: Duration = Field(0.4, description="tbf latency (queueing bound)")


class FaultPartitionArgs(FaultArgsBase):
    peers: FaultTargets | None = Field(
        None,
        description="The other side: traffic between the targets and these nodes (and their pods) is cut",
    )
    cidrs: list[Cidr] = Field(default_factory=list, description="Also cut traffic to/from these CIDRs")
    ports: list[int] = Field(default_factory=list, description="Only these ports of the CIDRs (default all)")
    protocol: FaultProtocol = FaultProtocol.ALL
    direction: FaultDirection = FaultDirection.BOTH

    @model_validator(mode="after")
    def _something(self) -> FaultPartitionArgs:
        if self.peers is None and not self.cidrs:
            raise ValueError("peers: give peers (a node set) or cidrs")
        if self.ports and self.protocol == FaultProtocol.ALL:
            raise ValueError("protocol: ports need protocol tcp or udp")
        return self


class FaultBlackholeArgs(FaultArgsBase):
    service: str = Field(..., pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$", description="namespace/name")
    port: int | None = Field(None, ge=1, le=65535, description="Default: every port of the service")


class FaultDnsArgs(FaultArgsBase):
    pass


class FaultLinkFlapArgs(FaultArgsBase):
    period: Duration = Field(4.0, description="One down+up cycle")
    down: Duration = Field(1.0, description="Time down in each cycle")

    @model_validator(mode="after")
    def _down_in_period(self) -> FaultLinkFlapArgs:
        if not 0 < self.down < self.period:
            raise ValueError("down: must be more than 0 and less than period")
        return self


class FaultApiserverArgs(FaultArgsBase):
    endpoint: str | None = Field(
        None,
        pattern=r"^[0-9.]+:[0-9]+$",
        description="ip:port of the control-plane endpoint; default: every control-plane node, port 6443",
    )


class FaultLossStep(StepBase):
    action: Literal["fault.loss"]
    args: FaultLossArgs


class FaultDelayStep(StepBase):
    action: Literal["fault.delay"]
    args: FaultDelayArgs


class FaultBandwidthStep(StepBase):
    action: Literal["fault.bandwidth"]
    args: FaultBandwidthArgs


class FaultPartitionStep(StepBase):
    action: Literal["fault.partition"]
    args: FaultPartitionArgs


class FaultBlackholeStep(StepBase):
    action: Literal["fault.blackhole"]
    args: FaultBlackholeArgs


class FaultDnsStep(StepBase):
    action: Literal["fault.dns"]
    args: FaultDnsArgs


class FaultLinkFlapStep(StepBase):
    action: Literal["fault.link-flap"]
    args: FaultLinkFlapArgs


class FaultApiserverStep(StepBase):
    action: Literal["fault.apiserver"]
    args: FaultApiserverArgs


class FaultPauseArgs(Model):
    duration: Duration = Field(..., description="How long to wait (game days: between faults)")


class FaultPauseStep(StepBase):
    """Wait, interruptibly (Ctrl-C or a monitor abort end it); nothing to undo."""

    action: Literal["fault.pause"]
    args: FaultPauseArgs


FAULT_STEP_TYPES: tuple[type[StepBase], ...] = (
    FaultLossStep,
    FaultDelayStep,
    FaultBandwidthStep,
    FaultPartitionStep,
    FaultBlackholeStep,
    FaultDnsStep,
    FaultLinkFlapStep,
    FaultApiserverStep,
    FaultPauseStep,
)


Step = Annotated[
    DemoTouchStep
    | DemoSleepStep
    | DemoFailStep
    | NodeCordonStep
    | NodeUncordonStep
    | NodeDrainStep
    | NodeLabelStep
    | NodeRestartPodsStep
    | AnsiblePlaybookStep
    | CniPreflightStep
    | CniInstallCalicoStep
    | CniSwitchNodeStep
    | CniFinalizeStep
    | CniDualInstallStep
    | CniDualSwitchNodeStep
    | CniDualFinalizeStep
    | CniCalicoModeStep
    | CniRemoveVxlanStep
    | FaultLossStep
    | FaultDelayStep
    | FaultBandwidthStep
    | FaultPartitionStep
    | FaultBlackholeStep
    | FaultDnsStep
    | FaultLinkFlapStep
    | FaultApiserverStep
    | FaultPauseStep,
    Field(discriminator="action"),
]

STEP_TYPES: tuple[type[StepBase], ...] = (
    DemoTouchStep,
    DemoSleepStep,
    DemoFailStep,
    NodeCordonStep,
    NodeUncordonStep,
    NodeDrainStep,
    NodeLabelStep,
    NodeRestartPodsStep,
    AnsiblePlaybookStep,
    CniPreflightStep,
    CniInstallCalicoStep,
    CniSwitchNodeStep,
    CniFinalizeStep,
    CniDualInstallStep,
    CniDualSwitchNodeStep,
    CniDualFinalizeStep,
    CniCalicoModeStep,
    CniRemoveVxlanStep,
    *FAULT_STEP_TYPES,
)


def action_names() -> list[str]:
    return [t.model_fields["action"].annotation.__args__[0] for t in STEP_TYPES]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- checks


class CheckBase(Model):
    name: str | None = None
    timeout: Duration = Field(120.0, description="Time allowed for the check")

    @property
    def display_name(self) -> str:
        return self.name or str(getattr(self, "type", "check"))


class DemoMarkersCheck(CheckBase):
    """Holds when the listed demo markers exist (present) or do not exist (absent)."""

    type: Literal["demo.markers"]
    present: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)


class ProbeScope(StrEnum):
    ALL = "all"
    CROSS_NODE = "cross-node"
    SERVICES = "services"
    POLICY = "policy"  # every pod pair on every declared port, allowed and denied, per NetworkPolicy


class ReachabilityCheck(CheckBase):
    type: Literal["reachability"]
    scope: ProbeScope = ProbeScope.ALL
    kinds: list[str] | None = Field(None, description="Only these probe kinds (default: all)")
    threshold: Percentage = Field(1.0, description="Share of probes that must pass")
    compare_baseline: bool = Field(True, description="Pairs that failed at preflight are not blamed")
    sample_per_source: int | None = Field(None, ge=1)
    seed: int = 0
    # added for issue 5 (additive):
    preflight_threshold: Percentage | None = Field(
        None, description="Threshold at preflight, where the baseline is recorded (default: threshold)"
    )
    probe_timeout: Duration = Field(1.0, description="Time allowed for each probe")
    path: str = Field("/", description="HTTP path probed on pods and services (the lab's pods: /healthz)")
    # added for issue 14 (additive):
    namespaces: list[str] | None = Field(
        None, description="scope policy: only pods of these namespaces (default: every namespace)"
    )

    @model_validator(mode="after")
    def _policy_scope(self) -> ReachabilityCheck:
        if self.scope is ProbeScope.POLICY:
            if self.kinds is not None:
                raise ValueError("kinds: not used with scope policy (it probes every declared port)")
            if self.sample_per_source is not None:
                raise ValueError("sample_per_source: not used with scope policy (every pair is probed)")
        elif self.namespaces is not None:
            raise ValueError("namespaces: only with scope policy")
        return self


class ContinuousProbeCheck(CheckBase):
    type: Literal["continuous-probe"]
    rate_hz: float = Field(20.0, gt=0, le=200)
    scope: ProbeScope = ProbeScope.CROSS_NODE
    exclude_wave_nodes: bool = Field(True, description="Only pairs between pods not on the wave's nodes")
    max_loss: Percentage = Field(0.0, description="Abort the stage above this loss")
    max_outage: Duration | None = Field(None, description="Abort the stage on an outage this long")
    sample_pairs: int | None = Field(64, ge=1)
    seed: int = 0
    # added for issue 5 (additive):
    nodeport: str | None = Field(
        None,
        description="Also probe this service (NAME or NAMESPACE/NAME) through its NodePort from outside,"
        " on the nodes outside the current wave",
    )
    probe_timeout: Duration = Field(1.0, description="Time allowed for each probe")
    path: str = Field("/", description="HTTP path probed on pods and services (the lab's pods: /healthz)")
    max_duration: Duration = Field(3600.0, description="Upper bound of the monitor (the stage ends it first)")
    min_availability: Percentage | None = Field(
        None, description="Abort when the share of answered probes stays below this for abort_after"
    )
    abort_after: Duration = Field(5.0, description="Window of min_availability")
    # added for issue 14 (additive):
    namespaces: list[str] | None = Field(
        None, description="scope policy: only pods of these namespaces (default: every namespace)"
    )

    @model_validator(mode="after")
    def _policy_scope(self) -> ContinuousProbeCheck:
        if self.scope is not ProbeScope.POLICY:
            if self.namespaces is not None:
                raise ValueError("namespaces: only with scope policy")
        elif self.nodeport is not None:
            raise ValueError("nodeport: not used with scope policy")
        return self


class NodesReachableCheck(CheckBase):
    """Every node of the target answers over the node executor (Ansible ping)."""

    type: Literal["nodes.reachable"]


class NodesSchedulableCheck(CheckBase):
    """Every node of the target is schedulable (no cordon left behind)."""

    type: Literal["nodes.schedulable"]


class CniNodesCheck(CheckBase):
    """Every node runs the expected CNI (``Node.cni``) and none keeps another CNI's leftovers."""

    type: Literal["cni.nodes"]
    expect: str = Field(..., description="flannel, canal, weave or calico")
    no_leftovers_of: list[str] = Field(default_factory=list, description="flannel, canal, weave, calico")
    bgp_established: bool = Field(False, description="Also require BGP sessions to every other node")


class PromComparison(StrEnum):
    """How the query's value is compared with the threshold: the condition that holds while the SLO is met."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="


class PromNoData(StrEnum):
    FAIL = "fail"  # no series, or NaN (e.g. 0/0 without traffic): the check fails at once
    OK = "ok"  # no data holds the condition (e.g. no error series at all means no errors)


PROM_URL_PATTERN = r"^(https?://[^\s/@?#]+(/[^\s?#]*)?)?$"


class PrometheusCheck(CheckBase):
    """An SLO gate: holds while the value of ``query`` (an instant PromQL query, one series or a scalar)
    compared by ``op`` with ``threshold`` holds, e.g. an error ratio ``<`` 0.01. With ``for``, a breach counts
    only once it has lasted that long (as an alerting rule's ``for``). Server unreachable, an HTTP error,
    a PromQL error or several series: the check fails, naming the reason (never a pass)."""

    type: Literal["prometheus"]
    query: str = Field(..., min_length=1, max_length=20000, description="Instant PromQL query")
    op: PromComparison = Field(
        ..., description="The condition that holds while the SLO is met: VALUE op threshold (quote > in YAML)"
    )
    threshold: float = Field(..., allow_inf_nan=False)
    for_: Duration = Field(
        0.0,
        alias="for",
        description="A breach counts only after it lasted this long (every evaluation breached); 0: at once",
    )
    url: str = Field(
        "",
        description="Prometheus base URL like http://127.0.0.1:9090; default $MIGRATOR_PROMETHEUS_URL."
        " No credentials in it: use token_env or token_file",
    )
    token_env: str = Field(
        "",
        description="Name of the environment variable holding a bearer token (never written anywhere)",
    )
    token_file: str = Field("", description="File holding a bearer token (never written anywhere)")
    ca_file: str = Field("", description="CA bundle for an https URL (default: the system's)")
    no_data: PromNoData = Field(
        PromNoData.FAIL, description="No series or NaN: fail (default) or ok (holds the condition)"
    )
    interval: Duration = Field(
        5.0, description="Outside a monitor: time between evaluations while a breach is waited out (for)"
    )
    request_timeout: Duration = Field(10.0, description="Time allowed for one HTTP request")
    attempts: int = Field(
        2, ge=1, le=5, description="Tries of one evaluation when the server is unreachable or answers 5xx"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(PROM_URL_PATTERN, value):
            raise ValueError(
                "expected an http:// or https:// URL like http://127.0.0.1:9090, without credentials (use"
                " token_env or token_file), query or fragment"
            )
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.match(r"^([A-Za-z_][A-Za-z0-9_]*)?$", value):
            raise ValueError("expected the NAME of an environment variable (letters, digits, _), not a token")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusCheck:
        if self.token_env and self.token_file:
            raise ValueError("token_file: give either token_env or token_file, not both")
        if self.interval <= 0:
            raise ValueError("interval: must be more than 0s")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout: must be more than 0s")
        return self


def _one_shot_checks_fit(checks: list[Any], field: str) -> None:
    """Outside a monitor (preflight, verify) a ``prometheus`` check with ``for`` waits a breach out for up to
    ``for``: it must fit in the check's ``timeout``. (In a monitor ``timeout`` bounds each round instead.)"""
    for index, check in enumerate(checks):
        if (
            isinstance(check, PrometheusCheck)
            and check.for_
            and check.for_ + check.request_timeout >= check.timeout
        ):
            raise ValueError(
                f"{field}[{index}].for: for plus request_timeout must be shorter than timeout here (outside a"
                " monitor the check waits a breach out for up to for): raise timeout"
            )


Check = Annotated[
    DemoMarkersCheck
    | ReachabilityCheck
    | ContinuousProbeCheck
    | NodesReachableCheck
    | NodesSchedulableCheck
    | CniNodesCheck
    | PrometheusCheck,
    Field(discriminator="type"),
]

CHECK_TYPES: tuple[type[CheckBase], ...] = (
    DemoMarkersCheck,
    ReachabilityCheck,
    ContinuousProbeCheck,
    NodesReachableCheck,
    NodesSchedulableCheck,
    CniNodesCheck,
    PrometheusCheck,
)


def check_type_names() -> list[str]:
    return [t.model_fields["type"].annotation.__args__[0] for t in CHECK_TYPES]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- stages


class Stage(Model):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
    description: str = ""
    for_each: ForEachNodes | None = None
    steps: list[Step] = Field(..., min_length=1, max_length=200)
    verify: list[Check] = Field(default_factory=list)
    monitor: list[Check] = Field(default_factory=list)
    on_failure: FailurePolicy = FailurePolicy.ABORT
    approval: bool = Field(False, description="Ask for confirmation on a TTY before the stage")
    enabled: bool = Field(
        True,
        description="A disabled stage is validated, then left out of the loaded plan;"
        " use a boolean param: enabled: ${{ params.NAME }}",
    )

    @model_validator(mode="after")
    def _unique_step_names(self) -> Stage:
        seen: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            name = step.display_name
            if name in seen:
                field = "name" if step.name else "action"
                raise ValueError(
                    f"steps[{index}].{field}: duplicate step name {name!r} in stage {self.name!r}"
                    f" (also steps[{seen[name]}]); give the steps distinct names"
                )
            seen[name] = index
        _one_shot_checks_fit(self.verify, "verify")
        return self


class Metadata(Model):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Spec(Model):
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    rollback: RollbackPolicy = RollbackPolicy.ON_FAILURE
    preflight: list[Check] = Field(default_factory=list)
    stages: list[Stage] = Field(..., min_length=1, max_length=200)
    verify: list[Check] = Field(default_factory=list, description="Checks after the last stage")
    pod_cidr: Cidr | None = Field(None, description="Pod network of the target, when the plan needs it")

    @model_validator(mode="after")
    def _unique_stage_names(self) -> Spec:
        seen: dict[str, int] = {}
        for index, stage in enumerate(self.stages):
            if stage.name in seen:
                raise ValueError(
                    f"stages[{index}].name: duplicate stage name {stage.name!r}"
                    f" (also stages[{seen[stage.name]}])"
                )
            seen[stage.name] = index
        _one_shot_checks_fit(self.preflight, "preflight")
        _one_shot_checks_fit(self.verify, "verify")
        return self


class Plan(Model):
    api_version: Literal["migrator/v1"] = Field(..., alias="apiVersion")
    kind: Literal["Plan"]
    metadata: Metadata
    spec: Spec


StepBase.model_rebuild()
for _t in STEP_TYPES:
    _t.model_rebuild()
