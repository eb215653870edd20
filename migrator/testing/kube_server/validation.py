"""What the real API server checks and defaults on the objects the fake validates: NetworkPolicies
(``networking.k8s.io/v1``) and Namespaces.

Written after kubernetes ``pkg/apis/networking/validation/validation.go`` (ValidateNetworkPolicy,
ValidateNetworkPolicyPort, ValidateNetworkPolicyPeer, ValidateIPBlock), ``apimachinery``'s
``ValidateLabelSelector`` / ``ValidateLabels`` / ``IsValidPortName`` / ``IsValidPortNum`` /
``IsQualifiedName`` / ``IsValidLabelValue`` / ``IsDNS1123Subdomain`` and ``pkg/apis/networking/v1/
defaults.go`` (``protocol`` TCP; ``policyTypes`` Ingress, plus Egress when there are egress rules). The
answer is the real server's: ``422 Invalid`` with one cause per field error (``FieldValueInvalid``,
``FieldValueNotSupported``, ``FieldValueRequired``, ``FieldValueForbidden``) and the message
``NetworkPolicy.networking.k8s.io "NAME" is invalid: [field: Invalid value: ...: detail, ...]``.

Namespaces: the name is a DNS-1123 label and ``kubernetes.io/metadata.name`` is set to it on every
create and update, whatever the client sent (as the real server's namespace strategy does).

Simplifications: no update-time leniency (the real server keeps accepting a pre-existing invalid CIDR
or selector value of the old object); malformed JSON types (a list where an object goes) are a 400
BadRequest, as the real decoder answers, with a shorter message.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from migrator.testing.kube_server.store import ApiError, Obj

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")
_PORT_NAME_LETTER = re.compile(r".*[a-z].*")

QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


class ErrorType(StrEnum):
    """``field.ErrorType``: the cause's ``reason`` and the word its message starts with."""

    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    REQUIRED = "FieldValueRequired"
    FORBIDDEN = "FieldValueForbidden"


@dataclass(frozen=True)
class FieldError:
    type: ErrorType
    field: str
    detail: str
    value: Any = None

    @property
    def message(self) -> str:
        """The cause's message, as ``field.Error.ErrorBody`` writes it."""
        if self.type is ErrorType.INVALID:
            return f"Invalid value: {_go_value(self.value)}: {self.detail}"
        if self.type is ErrorType.NOT_SUPPORTED:
            return f"Unsupported value: {_go_value(self.value)}: {self.detail}"
        if self.type is ErrorType.REQUIRED:
            return f"Required value{': ' + self.detail if self.detail else ''}"
        return f"Forbidden: {self.detail}"

    def cause(self) -> Obj:
        return {"reason": self.type.value, "message": self.message, "field": self.field}


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def invalid_error(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """The 422 the real server answers for these field errors."""
    qualified = f"{kind}.{group}" if group else kind
    body = ", ".join(f"{e.field}: {e.message}" for e in errors)
    message = f'{qualified} "{name}" is invalid: {body if len(errors) == 1 else "[" + body + "]"}'
    details: Obj = {"name": name, "kind": kind, "causes": [e.cause() for e in errors]}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", message, details)


# ------------------------------------------------------------------------------------ apimachinery


def qualified_name_errors(value: str) -> list[str]:
    """``IsQualifiedName``: an optional DNS subdomain prefix and ``/``, then a name of at most 63."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        msgs = [f"prefix part {m}" for m in dns1123_subdomain_errors(prefix)]
        if msgs:
            return msgs
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
            "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    out = []
    if len(name) > 63:
        out.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        out.append(QUALIFIED_NAME_MSG)
    return out


def label_value_errors(value: str) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        out.append(LABEL_VALUE_MSG)
    return out


def dns1123_subdomain_errors(value: str) -> list[str]:
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        out.append(DNS1123_SUBDOMAIN_MSG)
    return out


def dns1123_label_errors(value: str) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        out.append(DNS1123_LABEL_MSG)
    return out


def port_name_errors(name: str) -> list[str]:
    """``IsValidPortName`` (an IANA_SVC_NAME)."""
    out = []
    if len(name) > 15:
        out.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.fullmatch(name):
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER.fullmatch(name):
        out.append("must contain at least one letter (a-z)")
    if "--" in name:
        out.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def port_num_errors(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def labels_errors(labels: Any, path: str) -> list[FieldError]:
    """``ValidateLabels``: each key a qualified name, each value a label value (errors at ``path``)."""
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        raise _bad_request(path, "an object of strings")
    out: list[FieldError] = []
    for key, value in labels.items():
        out.extend(FieldError(ErrorType.INVALID, path, m, key) for m in qualified_name_errors(str(key)))
        if not isinstance(value, str):
            raise _bad_request(f"{path}.{key}", "a string")
        out.extend(FieldError(ErrorType.INVALID, path, m, value) for m in label_value_errors(value))
    return out


def label_selector_errors(selector: Any, path: str) -> list[FieldError]:
    """``ValidateLabelSelector``: matchLabels and each matchExpressions requirement."""
    if selector is None:
        return []
    if not isinstance(selector, Mapping):
        raise _bad_request(path, "an object")
    out = labels_errors(selector.get("matchLabels"), f"{path}.matchLabels")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise _bad_request(f"{path}.matchExpressions", "a list")
    for i, req in enumerate(expressions):
        here = f"{path}.matchExpressions[{i}]"
        if not isinstance(req, Mapping):
            raise _bad_request(here, "an object")
        op, values = req.get("operator"), req.get("values") or []
        if not isinstance(values, list):
            raise _bad_request(f"{here}.values", "a list")
        if op in ("In", "NotIn"):
            if not values:
                out.append(
                    FieldError(
                        ErrorType.REQUIRED,
                        f"{here}.values",
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    )
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                out.append(
                    FieldError(
                        ErrorType.FORBIDDEN,
                        f"{here}.values",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            out.append(FieldError(ErrorType.INVALID, f"{here}.operator", "not a valid selector operator", op))
        key = str(req.get("key") or "")
        out.extend(FieldError(ErrorType.INVALID, f"{here}.key", m, key) for m in qualified_name_errors(key))
        for j, value in enumerate(values):
            out.extend(
                FieldError(ErrorType.INVALID, f"{here}.values[{j}]", m, value)
                for m in label_value_errors(str(value))
            )
    return out


def _bad_request(path: str, expected: str) -> ApiError:
    return ApiError(400, "BadRequest", f"the object could not be decoded: {path} must be {expected}")


# ------------------------------------------------------------------------------ NetworkPolicy


def _port_errors(port: Any, path: str) -> list[FieldError]:
    """``ValidateNetworkPolicyPort``."""
    if not isinstance(port, Mapping):
        raise _bad_request(path, "an object")
    out: list[FieldError] = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        out.append(
            FieldError(
                ErrorType.NOT_SUPPORTED,
                f"{path}.protocol",
                'supported values: "TCP", "UDP", "SCTP"',
                protocol,
            )
        )
    number, end = port.get("port"), port.get("endPort")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
        raise _bad_request(f"{path}.endPort", "an integer")
    if number is None:
        if end is not None:
            out.append(
                FieldError(
                    ErrorType.INVALID,
                    f"{path}.endPort",
                    "may not be specified when `port` is not specified",
                    end,
                )
            )
    elif isinstance(number, int) and not isinstance(number, bool):
        out.extend(FieldError(ErrorType.INVALID, f"{path}.port", m, number) for m in port_num_errors(number))
        if end is not None:
            if end < number:
                out.append(
                    FieldError(
                        ErrorType.INVALID, f"{path}.endPort", "must be greater than or equal to `port`", end
                    )
                )
            out.extend(FieldError(ErrorType.INVALID, f"{path}.endPort", m, end) for m in port_num_errors(end))
    elif isinstance(number, str):
        if end is not None:
            out.append(
                FieldError(
                    ErrorType.INVALID,
                    f"{path}.endPort",
                    "may not be specified when `port` is non-numeric",
                    end,
                )
            )
        out.extend(FieldError(ErrorType.INVALID, f"{path}.port", m, number) for m in port_name_errors(number))
    else:
        raise _bad_request(f"{path}.port", "an integer or a string")
    return out


def _cidr(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as Go's ``ParseCIDR`` reads it (host bits may be set; no IPv4 leading zeros)."""
    if not isinstance(text, str) or "/" not in text:
        return None
    addr, _, bits = text.partition("/")
    if not bits.isdigit() or (len(bits) > 1 and bits.startswith("0")):
        return None
    if "%" in addr or ("." in addr and any(len(o) > 1 and o.startswith("0") for o in addr.split("."))):
        return None  # a zone, or an IPv4 octet with a leading zero: Go's ParseCIDR refuses both
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ip_block_errors(block: Any, path: str) -> list[FieldError]:
    """``ValidateIPBlock``: a valid ``cidr``; each ``except`` a valid CIDR strictly inside it."""
    if not isinstance(block, Mapping):
        raise _bad_request(path, "an object")
    cidr_text = block.get("cidr") or ""
    if not cidr_text:
        return [FieldError(ErrorType.REQUIRED, f"{path}.cidr", "")]
    cidr = _cidr(cidr_text)
    if cidr is None:
        return [FieldError(ErrorType.INVALID, f"{path}.cidr", CIDR_MSG, cidr_text)]
    out: list[FieldError] = []
    excepts = block.get("except") or []
    if not isinstance(excepts, list):
        raise _bad_request(f"{path}.except", "a list")
    for i, text in enumerate(excepts):
        here = f"{path}.except[{i}]"
        inner = _cidr(text)
        if inner is None:
            out.append(FieldError(ErrorType.INVALID, here, CIDR_MSG, text))
            continue
        inside = inner.version == cidr.version and inner.network_address in cidr
        if not inside or cidr.prefixlen >= inner.prefixlen:
            out.append(FieldError(ErrorType.INVALID, here, "must be a strict subset of `cidr`", text))
    return out


def _peer_errors(peer: Any, path: str) -> list[FieldError]:
    """``ValidateNetworkPolicyPeer``: at least one of the selectors or ipBlock; ipBlock alone."""
    if not isinstance(peer, Mapping):
        raise _bad_request(path, "an object")
    out: list[FieldError] = []
    count = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            count += 1
            out.extend(label_selector_errors(peer[key], f"{path}.{key}"))
    if peer.get("ipBlock") is not None:
        count += 1
        out.extend(_ip_block_errors(peer["ipBlock"], f"{path}.ipBlock"))
    if count == 0:
        out.append(FieldError(ErrorType.REQUIRED, path, "must specify a peer"))
    elif count > 1 and peer.get("ipBlock") is not None:
        out.append(FieldError(ErrorType.FORBIDDEN, path, "may not specify both ipBlock and another peer"))
    return out


def _rules_errors(spec: Mapping[str, Any], direction: str, peers_key: str) -> list[FieldError]:
    rules = spec.get(direction) or []
    if not isinstance(rules, list):
        raise _bad_request(f"spec.{direction}", "a list")
    out: list[FieldError] = []
    for i, rule in enumerate(rules):
        here = f"spec.{direction}[{i}]"
        if not isinstance(rule, Mapping):
            raise _bad_request(here, "an object")
        ports = rule.get("ports") or []
        peers = rule.get(peers_key) or []
        if not isinstance(ports, list) or not isinstance(peers, list):
            raise _bad_request(here, "an object with lists of ports and peers")
        for j, port in enumerate(ports):
            out.extend(_port_errors(port, f"{here}.ports[{j}]"))
        for j, peer in enumerate(peers):
            out.extend(_peer_errors(peer, f"{here}.{peers_key}[{j}]"))
    return out


def network_policy_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    """``ValidateNetworkPolicy`` (metadata name and labels, then the spec), on a defaulted object."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    out = [FieldError(ErrorType.INVALID, "metadata.name", m, name) for m in dns1123_subdomain_errors(name)]
    out.extend(labels_errors(meta.get("labels"), "metadata.labels"))
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise _bad_request("spec", "an object")
    out.extend(label_selector_errors(spec.get("podSelector") or {}, "spec.podSelector"))
    out.extend(_rules_errors(spec, "ingress", "from"))
    out.extend(_rules_errors(spec, "egress", "to"))
    types = spec.get("policyTypes") or []
    if not isinstance(types, list):
        raise _bad_request("spec.policyTypes", "a list")
    if len(types) > len(POLICY_TYPES):
        out.append(
            FieldError(
                ErrorType.INVALID, "spec.policyTypes", "may not specify more than two policyTypes", types
            )
        )
        return out
    out.extend(
        FieldError(
            ErrorType.NOT_SUPPORTED, f"spec.policyTypes[{i}]", 'supported values: "Ingress", "Egress"', t
        )
        for i, t in enumerate(types)
        if t not in POLICY_TYPES
    )
    return out


_SELECTOR: dict[str, Any] = {
    "matchLabels": None,
    "matchExpressions": [{"key": None, "operator": None, "values": None}],
}
_PORTS = [{"protocol": None, "port": None, "endPort": None}]
_PEERS = [
    {"podSelector": _SELECTOR, "namespaceSelector": _SELECTOR, "ipBlock": {"cidr": None, "except": None}}
]
#: The fields of a NetworkPolicy (``None``: a leaf, or a map of free keys such as ``matchLabels``)
NETWORK_POLICY_SCHEMA: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "podSelector": _SELECTOR,
        "policyTypes": None,
        "ingress": [{"from": _PEERS, "ports": _PORTS}],
        "egress": [{"to": _PEERS, "ports": _PORTS}],
    },
}


def unknown_fields(value: Any, schema: Any = NETWORK_POLICY_SCHEMA, path: str = "") -> list[str]:
    """The paths of the fields the schema does not declare (``spec.podselector``)."""
    if schema is None:
        return []
    if isinstance(schema, list):
        if not isinstance(value, list):
            return []
        return [u for i, item in enumerate(value) for u in unknown_fields(item, schema[0], f"{path}[{i}]")]
    if not isinstance(value, Mapping):
        return []
    out: list[str] = []
    for key, item in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in schema:
            out.append(here)
        else:
            out.extend(unknown_fields(item, schema[key], here))
    return out


def _prune(value: Any, schema: Any) -> Any:
    if schema is None:
        return value
    if isinstance(schema, list):
        return [_prune(v, schema[0]) for v in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    return {k: _prune(v, schema[k]) for k, v in value.items() if k in schema}


def check_unknown_fields(kind: str, obj: Obj, *, strict: bool) -> Obj:
    """Unknown fields as the real server treats them: with ``fieldValidation=Strict`` (what kubectl
    sends) a 400 naming them; else (``Warn``, the server's default) dropped from what is stored."""
    if kind != "NetworkPolicy":
        return obj
    unknown = unknown_fields(obj)
    if not unknown:
        return obj
    if strict:
        listed = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise ApiError(400, "BadRequest", f"strict decoding error: {listed}")
    pruned: Obj = _prune(obj, NETWORK_POLICY_SCHEMA)
    return pruned


def default_network_policy(obj: Obj) -> Obj:
    """``SetDefaults_NetworkPolicy`` and ``SetDefaults_NetworkPolicyPort`` on a copy: every port's
    ``protocol`` TCP; ``policyTypes`` Ingress, plus Egress when there are egress rules; an absent
    ``podSelector`` is the empty selector (it is required on the wire, ``{}`` is its zero value)."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return obj  # refused by the validation
    if spec.get("podSelector") is None:
        spec["podSelector"] = {}
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict) and port.get("protocol") is None:
                    port["protocol"] = "TCP"
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    return obj


def admit_network_policy(obj: Obj) -> Obj:
    """The defaulted object (unknown fields dropped), or the 422 (400 for a wrong JSON type or kind)
    the real server answers."""
    if (
        obj.get("apiVersion", "networking.k8s.io/v1") != "networking.k8s.io/v1"
        or obj.get("kind", "NetworkPolicy") != "NetworkPolicy"
    ):
        raise ApiError(
            400,
            "BadRequest",
            f"the object's apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')} is not"
            " networking.k8s.io/v1/NetworkPolicy",
        )
    defaulted = default_network_policy(check_unknown_fields("NetworkPolicy", obj, strict=False))
    errors = network_policy_errors(defaulted)
    if errors:
        name = str((obj.get("metadata") or {}).get("name") or "")
        raise invalid_error("NetworkPolicy", "networking.k8s.io", name, errors)
    return defaulted


# --------------------------------------------------------------------------------- Namespace


def admit_namespace(obj: Obj) -> Obj:
    """A Namespace as the real server stores it: its name a DNS-1123 label, its labels valid, and
    ``kubernetes.io/metadata.name`` set to its name (overriding what the client sent)."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    name = str(meta.get("name") or "")
    errors = [FieldError(ErrorType.INVALID, "metadata.name", m, name) for m in dns1123_label_errors(name)]
    if not name:
        errors = []  # the store answers "metadata.name: Required value"
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise _bad_request("metadata.labels", "an object of strings")
    errors.extend(labels_errors(labels, "metadata.labels"))
    if errors:
        raise invalid_error("Namespace", "", name, errors)
    if name:
        meta["labels"] = {**(labels or {}), NAMESPACE_NAME_LABEL: name}
    return obj


ADMISSION = {"NetworkPolicy": admit_network_policy, "Namespace": admit_namespace}


def admit(kind: str, obj: Obj) -> Obj:
    """The object as the real server would store it (defaulted), or the error it answers."""
    check = ADMISSION.get(kind)
    return check(obj) if check is not None else obj
