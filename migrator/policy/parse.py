"""Plain Kubernetes objects (dicts from YAML or the API) -> the policy vocabulary, validated as the API
server validates them (k8s.io/kubernetes pkg/apis/networking/validation: ValidateNetworkPolicySpec,
ValidateNetworkPolicyPeer, ValidateNetworkPolicyPort, ValidateIPBlock; apimachinery's label selector and
label validation; the NetworkPolicy defaulting of policyTypes).

Every problem of an object is collected, then one :class:`PolicyError` is raised whose message has a line
per problem, ``WHERE (NetworkPolicy NS/NAME): spec.ingress[0].ports[0].endPort: MESSAGE``, and whose
``fields`` lists the paths. Unknown fields are refused too (as ``kubectl apply`` does with its default
strict field validation), so a misspelt ``podselector`` is an error rather than an allow-all.

CIDRs: like the API server's legacy CIDR fields, a CIDR with host bits set (``10.1.2.3/4``, which the
e2e suite itself uses) is accepted and means its network; IPv4 with leading zeros is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from migrator.policy import validation
from migrator.policy.objects import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Operator,
    Peer,
    PolicyError,
    PolicyPort,
    PolicyType,
    Protocol,
    Requirement,
    Rule,
)

NETWORK_POLICY_API_VERSION = "networking.k8s.io/v1"
MAX_POLICY_TYPES = 2
_CIDR_SHAPE = re.compile(r"^[0-9A-Fa-f:.]+/(0|[1-9][0-9]{0,2})$")


class _Problems:
    """The problems found in one object, each with its field path."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path.lstrip("."), message))  # a selector parsed alone has no parent path

    def raise_if_any(self, where: str) -> None:
        if not self.items:
            return
        lines = [f"{where}: {path}: {msg}" if path else f"{where}: {msg}" for path, msg in self.items]
        raise PolicyError("\n".join(lines), fields=tuple(path for path, _ in self.items))


def _where(where: str, kind: str, name: str) -> str:
    what = f"{kind} {name}" if name else kind
    return f"{where} ({what})" if where else what


def _mapping(obj: Any, path: str, problems: _Problems) -> Mapping[str, Any] | None:
    """``obj`` as a mapping; ``None`` (and a problem) when it is not one. A missing (None) value is ``{}``."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        problems.add(path, f"must be an object, not {type(obj).__name__}")
        return None
    return obj


def _sequence(obj: Any, path: str, problems: _Problems) -> Sequence[Any]:
    if obj is None:
        return ()
    if isinstance(obj, str | bytes) or not isinstance(obj, Sequence):
        problems.add(path, f"must be a list, not {type(obj).__name__}")
        return ()
    return obj


def _unknown_fields(obj: Mapping[str, Any], allowed: set[str], path: str, problems: _Problems) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            problems.add(where, "unknown field")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _labels(obj: Any, path: str, problems: _Problems) -> dict[str, str]:
    """A ``labels``/``matchLabels`` map: qualified-name keys, valid label values."""
    mapping = _mapping(obj, path, problems)
    result: dict[str, str] = {}
    for key, value in (mapping or {}).items():
        if not isinstance(key, str):
            problems.add(path, f"key {key!r} must be a string")
            continue
        for msg in validation.is_qualified_name(key):
            problems.add(f"{path}.{key}", f"invalid key {key!r}: {msg}")
        if not isinstance(value, str):
            problems.add(f"{path}.{key}", f"value must be a string, not {type(value).__name__}")
            continue
        for msg in validation.is_valid_label_value(value):
            problems.add(f"{path}.{key}", f"invalid value {value!r}: {msg}")
        result[key] = value
    return result


def _requirement(obj: Any, path: str, problems: _Problems) -> Requirement | None:
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return None
    _unknown_fields(mapping, {"key", "operator", "values"}, path, problems)
    key = mapping.get("key")
    ok = True
    if not isinstance(key, str) or not key:
        problems.add(f"{path}.key", "required")
        ok = False
    else:
        for msg in validation.is_qualified_name(key):
            problems.add(f"{path}.key", f"invalid key {key!r}: {msg}")
    raw_op = mapping.get("operator")
    try:
        operator = Operator(str(raw_op))
    except ValueError:
        supported = ", ".join(f'"{o.value}"' for o in Operator)
        problems.add(f"{path}.operator", f"Unsupported value: {raw_op!r}: supported values: {supported}")
        return None
    raw_values = _sequence(mapping.get("values"), f"{path}.values", problems)
    values: list[str] = []
    for i, value in enumerate(raw_values):
        if not isinstance(value, str):
            problems.add(f"{path}.values[{i}]", f"must be a string, not {type(value).__name__}")
            ok = False
            continue
        for msg in validation.is_valid_label_value(value):
            problems.add(f"{path}.values[{i}]", f"invalid value {value!r}: {msg}")
        values.append(value)
    if operator in (Operator.IN, Operator.NOT_IN) and not raw_values:
        problems.add(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and raw_values:
        problems.add(f"{path}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
    if not ok or not isinstance(key, str):
        return None
    return Requirement(key=key, operator=operator, values=frozenset(values))


def _selector(obj: Any, path: str, problems: _Problems) -> LabelSelector:
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return LabelSelector()
    _unknown_fields(mapping, {"matchLabels", "matchExpressions"}, path, problems)
    labels = _labels(mapping.get("matchLabels"), f"{path}.matchLabels", problems)
    reqs: list[Requirement] = []
    for i, raw in enumerate(_sequence(mapping.get("matchExpressions"), f"{path}.matchExpressions", problems)):
        req = _requirement(raw, f"{path}.matchExpressions[{i}]", problems)
        if req is not None:
            reqs.append(req)
    return LabelSelector(match_labels=labels, match_expressions=tuple(reqs))


def parse_selector(obj: Mapping[str, Any] | None, *, where: str) -> LabelSelector:
    """A ``metav1.LabelSelector`` (``None``: the empty selector, which matches everything)."""
    problems = _Problems()
    selector = _selector(obj, "", problems)
    problems.raise_if_any(where or "label selector")
    return selector


def _network(
    cidr: Any, path: str, problems: _Problems
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(cidr, str) or not cidr:
        problems.add(path, "required" if not cidr else f"must be a string, not {type(cidr).__name__}")
        return None
    if not _CIDR_SHAPE.match(cidr):  # Go's ParseCIDR: no netmask form, no zone, no leading-zero length
        problems.add(path, f"must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64): {cidr!r}")
        return None
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        problems.add(path, f"must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64): {cidr!r}")
        return None


def _ip_block(obj: Any, path: str, problems: _Problems) -> IPBlock | None:
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return None
    _unknown_fields(mapping, {"cidr", "except"}, path, problems)
    cidr = mapping.get("cidr")
    net = _network(cidr, f"{path}.cidr", problems)
    excepts: list[str] = []
    for i, raw in enumerate(_sequence(mapping.get("except"), f"{path}.except", problems)):
        exc = _network(raw, f"{path}.except[{i}]", problems)
        if exc is None or net is None:
            continue
        inside = exc.version == net.version and exc.network_address in net and net.prefixlen < exc.prefixlen
        if not inside:
            problems.add(f"{path}.except[{i}]", f"{raw!r}: must be a strict subset of `cidr`")
            continue
        excepts.append(str(raw))
    if net is None or not isinstance(cidr, str):
        return None
    return IPBlock(cidr=cidr, except_=tuple(excepts))


def _peer(obj: Any, path: str, namespace: str, problems: _Problems) -> Peer | None:
    del namespace  # the peer keeps its selectors; the model resolves "same namespace"
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return None
    _unknown_fields(mapping, {"podSelector", "namespaceSelector", "ipBlock"}, path, problems)
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if mapping.get(k) is not None]
    if not present:
        problems.add(path, "must specify a peer")
        return None
    pods = (
        _selector(mapping["podSelector"], f"{path}.podSelector", problems)
        if "podSelector" in present
        else None
    )
    nss = (
        _selector(mapping["namespaceSelector"], f"{path}.namespaceSelector", problems)
        if "namespaceSelector" in present
        else None
    )
    block = _ip_block(mapping["ipBlock"], f"{path}.ipBlock", problems) if "ipBlock" in present else None
    if "ipBlock" in present and len(present) > 1:
        problems.add(path, "may not specify both ipBlock and another peer")
        return None
    return Peer(pod_selector=pods, namespace_selector=nss, ip_block=block)


def _check_port(port: Any, end_port: int | None, path: str, problems: _Problems) -> None:
    """ValidateNetworkPolicyPort's checks of ``port`` and ``endPort``."""
    if port is None:
        if end_port is not None:
            problems.add(f"{path}.endPort", "may not be specified when `port` is not specified")
    elif _is_int(port):
        for msg in validation.is_valid_port_num(port):
            problems.add(f"{path}.port", f"{port}: {msg}")
        if end_port is not None:
            if end_port < port:
                problems.add(f"{path}.endPort", f"{end_port}: must be greater than or equal to `port`")
            for msg in validation.is_valid_port_num(end_port):
                problems.add(f"{path}.endPort", f"{end_port}: {msg}")
    elif isinstance(port, str):
        if end_port is not None:
            problems.add(f"{path}.endPort", "may not be specified when `port` is non-numeric")
        for msg in validation.is_valid_port_name(port):
            problems.add(f"{path}.port", f"{port!r}: {msg}")
    else:
        problems.add(f"{path}.port", f"must be an integer or a port name, not {type(port).__name__}")


def _port(obj: Any, path: str, problems: _Problems) -> PolicyPort | None:
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return None
    _unknown_fields(mapping, {"protocol", "port", "endPort"}, path, problems)
    raw_proto = mapping.get("protocol")
    protocol = Protocol.TCP
    if raw_proto is not None:
        try:
            protocol = Protocol(raw_proto)
        except ValueError:
            problems.add(
                f"{path}.protocol",
                f'Unsupported value: {raw_proto!r}: supported values: "TCP", "UDP", "SCTP"',
            )
            return None
    port = mapping.get("port")
    end_port = mapping.get("endPort")
    if end_port is not None and not _is_int(end_port):
        problems.add(f"{path}.endPort", f"must be an integer, not {type(end_port).__name__}")
        return None
    count = len(problems.items)
    _check_port(port, end_port, path, problems)
    if len(problems.items) != count:
        return None
    return PolicyPort(protocol=protocol, port=port, end_port=end_port)


def _rule(obj: Any, path: str, peers_key: str, namespace: str, problems: _Problems) -> Rule:
    mapping = _mapping(obj, path, problems)
    if mapping is None:
        return Rule()
    _unknown_fields(mapping, {peers_key, "ports"}, path, problems)
    ports = [
        _port(raw, f"{path}.ports[{i}]", problems)
        for i, raw in enumerate(_sequence(mapping.get("ports"), f"{path}.ports", problems))
    ]
    peers = [
        _peer(raw, f"{path}.{peers_key}[{i}]", namespace, problems)
        for i, raw in enumerate(_sequence(mapping.get(peers_key), f"{path}.{peers_key}", problems))
    ]
    return Rule(
        peers=tuple(p for p in peers if p is not None), ports=tuple(p for p in ports if p is not None)
    )


def _policy_types(raw: Any, has_egress: bool, problems: _Problems) -> frozenset[PolicyType]:
    items = _sequence(raw, "spec.policyTypes", problems)
    if len(items) > MAX_POLICY_TYPES:
        problems.add("spec.policyTypes", "may not specify more than two policyTypes")
        return frozenset()
    types: set[PolicyType] = set()
    for i, item in enumerate(items):
        try:
            types.add(PolicyType(item))
        except ValueError:
            problems.add(
                f"spec.policyTypes[{i}]",
                f'Unsupported value: {item!r}: supported values: "Ingress", "Egress"',
            )
    if not items:  # the API server's defaulting
        types.add(PolicyType.INGRESS)
        if has_egress:
            types.add(PolicyType.EGRESS)
    return frozenset(types)


def _metadata(
    obj: Mapping[str, Any], problems: _Problems, *, namespaced: bool, default_namespace: str
) -> tuple[str, str]:
    meta = _mapping(obj.get("metadata"), "metadata", problems) or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.add("metadata.name", "name or generateName is required" if not name else "must be a string")
        name = ""
    else:
        check = validation.is_dns1123_subdomain if namespaced else validation.is_dns1123_label
        for msg in check(name):
            problems.add("metadata.name", f"{name!r}: {msg}")
    namespace = ""
    if namespaced:
        raw_ns = meta.get("namespace", default_namespace)
        if not isinstance(raw_ns, str) or not raw_ns:
            problems.add("metadata.namespace", "must be a non-empty string")
        else:
            for msg in validation.is_dns1123_label(raw_ns):
                problems.add("metadata.namespace", f"{raw_ns!r}: {msg}")
            namespace = raw_ns
    return namespace, name


def _kind(obj: Mapping[str, Any], kind: str, api_version: str, problems: _Problems) -> None:
    if obj.get("kind", kind) != kind:
        problems.add("kind", f"must be {kind!r}, not {obj.get('kind')!r}")
    if obj.get("apiVersion", api_version) != api_version:
        problems.add("apiVersion", f"must be {api_version!r}, not {obj.get('apiVersion')!r}")


def parse_network_policy(
    obj: Mapping[str, Any], *, where: str = "", default_namespace: str = "default"
) -> NetworkPolicy:
    """See :func:`migrator.policy.model.parse_network_policy`; ``default_namespace`` is used when the object
    has no ``metadata.namespace`` (as ``kubectl`` does with its current namespace)."""
    problems = _Problems()
    if not isinstance(obj, Mapping):
        problems.add("", f"a NetworkPolicy must be an object, not {type(obj).__name__}")
        problems.raise_if_any(_where(where, "NetworkPolicy", ""))
    _kind(obj, "NetworkPolicy", NETWORK_POLICY_API_VERSION, problems)
    namespace, name = _metadata(obj, problems, namespaced=True, default_namespace=default_namespace)
    spec = _mapping(obj.get("spec"), "spec", problems) or {}
    _unknown_fields(spec, {"podSelector", "policyTypes", "ingress", "egress"}, "spec", problems)
    selector = _selector(spec.get("podSelector"), "spec.podSelector", problems)
    ingress = tuple(
        _rule(raw, f"spec.ingress[{i}]", "from", namespace, problems)
        for i, raw in enumerate(_sequence(spec.get("ingress"), "spec.ingress", problems))
    )
    egress = tuple(
        _rule(raw, f"spec.egress[{i}]", "to", namespace, problems)
        for i, raw in enumerate(_sequence(spec.get("egress"), "spec.egress", problems))
    )
    types = _policy_types(spec.get("policyTypes"), bool(egress), problems)
    problems.raise_if_any(_where(where, "NetworkPolicy", f"{namespace}/{name}" if name else ""))
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=selector,
        policy_types=types,
        ingress=ingress,
        egress=egress,
    )


def parse_namespace(obj: Mapping[str, Any], *, where: str = "") -> Namespace:
    """A Namespace object -> :class:`Namespace`; ``kubernetes.io/metadata.name`` is set to the name (the
    API server overwrites any other value)."""
    problems = _Problems()
    if not isinstance(obj, Mapping):
        problems.add("", f"a Namespace must be an object, not {type(obj).__name__}")
        problems.raise_if_any(_where(where, "Namespace", ""))
    _kind(obj, "Namespace", "v1", problems)
    _, name = _metadata(obj, problems, namespaced=False, default_namespace="")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    labels = _labels(meta.get("labels") if meta else None, "metadata.labels", problems)
    problems.raise_if_any(_where(where, "Namespace", name))
    labels[NAMESPACE_NAME_LABEL] = name
    return Namespace(name=name, labels=labels)


def parse_labels(obj: Any, *, where: str, path: str = "metadata.labels") -> dict[str, str]:
    """A label map (e.g. a Pod's ``metadata.labels``), validated: qualified-name keys, valid values."""
    problems = _Problems()
    labels = _labels(obj, path, problems)
    problems.raise_if_any(where or "labels")
    return labels
