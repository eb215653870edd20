"""``lab apply`` / ``lab delete`` / ``lab label``: NetworkPolicies, Namespaces and pod labels in the lab.

Files are multi-document YAML. Every document is checked (and every change tried on a copy of the
state) before anything is applied: a bad document is a :class:`~migrator.errors.UsageError` naming the
file, the document number (1-based) and the field, and nothing is applied. Kinds:

- ``NetworkPolicy`` (networking.k8s.io/v1): validated by :func:`migrator.policy.model.parse_network_policy`,
  stored with its raw object; its namespace must exist (or be created earlier in the same apply).
- ``Namespace`` (v1): created, or its labels replaced (``kubernetes.io/metadata.name`` is always the name).
- ``Pod`` (v1): only ``metadata.labels`` of an existing pod can be changed (the labels given are set;
  remove one with ``lab label pod NS/NAME key-``); any other field is refused, as the lab cannot change
  a running pod's spec.

Then the emulated control plane follows: kube-proxy (a pod's labels choose its services) and the policy
agents on every enforcing node. The caller holds the lab's lock.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from migrator.errors import UsageError
from migrator.lab import control, netpol, workloads
from migrator.lab.state import LabState, PolicyState, StateStore
from migrator.policy.model import NAMESPACE_NAME_LABEL, parse_network_policy

_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_NAME_RE = re.compile(rf"^{_NAME_PART}$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
POD_METADATA = frozenset({"name", "namespace", "labels", "annotations"})


class Action(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    LABELED = "labeled"


@dataclass(frozen=True)
class Outcome:
    kind: str  # NetworkPolicy | Namespace | Pod
    key: str  # "ns/name", or the namespace's name
    action: Action

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "action": self.action.value}


@dataclass(frozen=True)
class Document:
    file: str
    index: int  # 1-based, among the file's non-empty documents
    obj: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.file}: document {self.index}"


# ----------------------------------------------------------------------------------------- reading


def load_documents(files: Sequence[str | Path]) -> list[Document]:
    """Every non-empty document of ``files`` (``-`` is not supported: give a file)."""
    if not files:
        raise UsageError("give at least one file with -f")
    out: list[Document] = []
    for f in files:
        path = Path(f)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        index = 0
        try:
            for obj in yaml.safe_load_all(text):
                if obj is None:
                    continue
                index += 1
                if not isinstance(obj, dict):
                    raise UsageError(f"{path}: document {index}: not a mapping (a Kubernetes object)")
                out.append(Document(str(path), index, obj))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise UsageError(f"{path}: document {index + 1}{line}: invalid YAML: {exc}") from exc
    return out


def check_labels(labels: object, where: str, field: str = "metadata.labels") -> dict[str, str]:
    """Labels as the API server validates them (keys ``[prefix/]name``, values of at most 63 chars)."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise UsageError(f"{where}: {field}: must be a mapping of strings")
    out: dict[str, str] = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UsageError(f"{where}: {field}.{k}: keys and values must be strings (quote {v!r})")
        prefix, _, name = k.rpartition("/")
        if (
            prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix))
        ) or not _LABEL_NAME_RE.match(name):
            raise UsageError(f"{where}: {field}: invalid label key {k!r}")
        if v and not _LABEL_NAME_RE.match(v):
            raise UsageError(f"{where}: {field}.{k}: invalid label value {v!r} (at most 63 characters)")
        out[k] = v
    return out


def _meta(doc: Document, *, namespaced: bool) -> tuple[str, str, Mapping[str, Any]]:
    meta = doc.obj.get("metadata")
    if not isinstance(meta, dict):
        raise UsageError(f"{doc.where}: metadata: required (with a name)")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{doc.where}: metadata.name: required")
    ns = meta.get("namespace", "default") if namespaced else ""
    if namespaced and (not isinstance(ns, str) or not _DNS_LABEL_RE.match(ns)):
        raise UsageError(f"{doc.where}: metadata.namespace: invalid namespace {ns!r}")
    return name, ns, meta


def _kind(doc: Document) -> str:
    kind, api = doc.obj.get("kind"), doc.obj.get("apiVersion")
    expected = {"NetworkPolicy": "networking.k8s.io/v1", "Namespace": "v1", "Pod": "v1"}
    if not isinstance(kind, str) or kind not in expected:
        raise UsageError(
            f"{doc.where}: kind: {kind!r} is not supported by the lab (NetworkPolicy, Namespace or Pod)"
        )
    if api != expected[kind]:
        raise UsageError(f"{doc.where}: apiVersion: {api!r} for kind {kind} (expected {expected[kind]})")
    return kind


# ---------------------------------------------------------------------------------------- changing


def _apply_doc(st: LabState, doc: Document) -> Outcome:
    kind = _kind(doc)
    if kind == "Namespace":
        name, _, meta = _meta(doc, namespaced=False)
        if not _DNS_LABEL_RE.match(name):
            raise UsageError(f"{doc.where}: metadata.name: invalid namespace name {name!r}")
        extra = sorted(set(doc.obj) - {"apiVersion", "kind", "metadata", "spec", "status"})
        if extra:
            raise UsageError(f"{doc.where}: {extra[0]}: unknown field")
        labels = check_labels(meta.get("labels"), doc.where)
        new = workloads.namespace_state(name, labels)
        old = st.namespaces.get(name)
        st.namespaces[name] = new
        if old is None:
            return Outcome(kind, name, Action.CREATED)
        return Outcome(kind, name, Action.UNCHANGED if old.labels == new.labels else Action.CONFIGURED)
    if kind == "Pod":
        name, ns, meta = _meta(doc, namespaced=True)
        key = f"{ns}/{name}"
        pod = st.pods.get(key)
        if pod is None:
            raise UsageError(
                f"{doc.where}: pod {key} does not exist (the lab only changes an existing pod's labels)"
            )
        other = sorted(set(doc.obj) - {"apiVersion", "kind", "metadata"}) or sorted(set(meta) - POD_METADATA)
        if other:
            field = other[0] if other[0] in doc.obj else f"metadata.{other[0]}"
            raise UsageError(
                f"{doc.where}: {field}: the lab can only change metadata.labels of an existing pod "
                "(remove the other fields)"
            )
        labels = check_labels(meta.get("labels"), doc.where)
        before = dict(pod.labels)
        pod.labels.update(labels)
        return Outcome(kind, key, Action.UNCHANGED if pod.labels == before else Action.LABELED)
    name, ns, meta = _meta(doc, namespaced=True)
    raw = copy.deepcopy(dict(doc.obj))
    raw["metadata"] = {**meta, "namespace": ns}
    parse_network_policy(raw, where=doc.where)
    if ns not in st.namespaces:
        raise UsageError(f"{doc.where}: metadata.namespace: namespace {ns!r} does not exist in the lab")
    key = f"{ns}/{name}"
    old_p = st.policies.get(key)
    st.policies[key] = PolicyState(namespace=ns, name=name, raw=raw)
    if old_p is None:
        return Outcome(kind, key, Action.CREATED)
    return Outcome(kind, key, Action.UNCHANGED if old_p.raw == raw else Action.CONFIGURED)


def _delete_doc(st: LabState, doc: Document, gone: set[str]) -> Outcome:
    """Delete one object; ``gone``: the namespaces deleted earlier in this request (their policies went
    with them, so deleting one of those policies again is not an error)."""
    kind = _kind(doc)
    if kind == "Pod":
        raise UsageError(
            f"{doc.where}: kind: the lab does not delete pods (lab delete: NetworkPolicy, Namespace)"
        )
    if kind == "Namespace":
        name, _, _ = _meta(doc, namespaced=False)
        if name not in st.namespaces:
            raise UsageError(f"{doc.where}: metadata.name: namespace {name!r} not found")
        if name in workloads.SYSTEM_NAMESPACES:
            raise UsageError(f"{doc.where}: metadata.name: namespace {name!r} is a system namespace")
        pods = sorted(k for k, p in st.pods.items() if p.namespace == name)
        if pods:
            raise UsageError(
                f"{doc.where}: metadata.name: namespace {name!r} has pods ({', '.join(pods[:3])}): "
                "the lab does not delete pods"
            )
        del st.namespaces[name]
        gone.add(name)
        for key in [k for k, p in st.policies.items() if p.namespace == name]:
            del st.policies[key]
        return Outcome(kind, name, Action.DELETED)
    name, ns, _ = _meta(doc, namespaced=True)
    key = f"{ns}/{name}"
    if key not in st.policies and ns in gone:
        return Outcome(kind, key, Action.DELETED)  # with its namespace
    if key not in st.policies:
        raise UsageError(f"{doc.where}: metadata.name: networkpolicy {key} not found")
    del st.policies[key]
    return Outcome(kind, key, Action.DELETED)


def _commit(store: StateStore, st: LabState, trial: LabState, outcomes: Sequence[Outcome]) -> None:
    """Copy the trial's objects into the real state, then let kube-proxy and the policy agents follow."""
    st.namespaces = trial.namespaces
    st.policies = trial.policies
    pods_changed = False
    for key, p in trial.pods.items():
        if key in st.pods and st.pods[key].labels != p.labels:
            st.pods[key].labels = dict(p.labels)
            pods_changed = True
    store.save(st)
    if not any(o.action != Action.UNCHANGED for o in outcomes):
        return
    if pods_changed:
        control.sync_services(store, st)  # endpoints follow pod labels; the policy agents follow it
    else:
        netpol.reconcile(store, st)


def apply_files(
    store: StateStore,
    st: LabState,
    files: Sequence[str | Path],
    *,
    delete: bool = False,
    dry_run: bool = False,
) -> list[Outcome]:
    """``lab apply -f`` (or ``lab delete -f``): all documents or none. ``dry_run``: every document is
    validated and its outcome computed against the current objects, and nothing is saved."""
    docs = load_documents(files)
    trial = st.model_copy(deep=True)
    gone: set[str] = set()
    outcomes = [_delete_doc(trial, d, gone) if delete else _apply_doc(trial, d) for d in docs]
    if not dry_run:
        _commit(store, st, trial, outcomes)
    return outcomes


# ------------------------------------------------------------------------------------------ labels


def parse_label_args(args: Sequence[str]) -> dict[str, str | None]:
    """``k=v`` sets, ``k-`` removes (as ``kubectl label``)."""
    if not args:
        raise UsageError("give at least one label: key=value to set, key- to remove")
    out: dict[str, str | None] = {}
    for a in args:
        if a.endswith("-") and "=" not in a:
            key, value = a[:-1], None
        elif "=" in a:
            key, _, v = a.partition("=")
            value = v
        else:
            raise UsageError(f"label {a!r}: use key=value to set or key- to remove")
        check_labels({key: value or ""}, f"label {a!r}", field="label")
        out[key] = value
    return out


def label(
    store: StateStore,
    st: LabState,
    kind: str,
    key: str,
    changes: Mapping[str, str | None],
    *,
    dry_run: bool = False,
) -> Outcome:
    """``lab label pod NS/NAME ...`` or ``lab label namespace NAME ...`` (``dry_run``: nothing saved)."""
    trial = st.model_copy(deep=True)
    if kind == "namespace":
        ns = trial.namespaces.get(key)
        if ns is None:
            raise UsageError(
                f"namespace {key!r} not found (namespaces: {', '.join(sorted(trial.namespaces))})"
            )
        if NAMESPACE_NAME_LABEL in changes and changes[NAMESPACE_NAME_LABEL] != key:
            raise UsageError(f"label {NAMESPACE_NAME_LABEL} is set by the API server and cannot be changed")
        labels = dict(ns.labels)
        target = labels
    elif kind == "pod":
        pod = trial.pods.get(key)
        if pod is None:
            raise UsageError(f"pod {key!r} not found (give NAMESPACE/NAME, or -n NAMESPACE NAME)")
        labels = pod.labels
        target = labels
    else:
        raise UsageError(f"cannot label {kind!r} (pod or namespace)")
    before = dict(target)
    for k, v in changes.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = v
    if kind == "namespace":
        trial.namespaces[key] = workloads.namespace_state(key, target)
    out = Outcome(
        "Namespace" if kind == "namespace" else "Pod",
        key,
        Action.UNCHANGED if target == before else Action.LABELED,
    )
    if not dry_run:
        _commit(store, st, trial, [out])
    return out
