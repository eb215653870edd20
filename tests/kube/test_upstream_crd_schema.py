"""``migrator.testing.kube_server.crd_schema`` against the REAL Calico v3.31.7 CRD schemas (calico.yaml):
what the API server accepts, refuses (422) and prunes, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from migrator.testing.kube_server import crd_schema
from migrator.testing.kube_server.store import ApiError, ResourceType
from tests.kube.test_upstream_flannel import CALICO, UPSTREAM, real_docs

pytestmark = pytest.mark.skipif(not CALICO.is_file(), reason=f"no upstream files in {UPSTREAM}")


def schema(kind: str) -> dict[str, Any]:
    crd = next(
        d
        for d in real_docs(CALICO)
        if d["kind"] == "CustomResourceDefinition" and d["spec"]["names"]["kind"] == kind
    )
    found: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return found


def errors(kind: str, spec: dict[str, Any]) -> list[str]:
    return crd_schema.check({"spec": spec}, schema(kind)).errors


def test_felix_patterns_in_go_syntax_are_checked() -> None:
    """``^(?i)(Trace|Debug|...)?$``: RE2's inline flag, in the middle for Python."""
    assert errors("FelixConfiguration", {"logSeverityScreen": "info", "reportingInterval": "30s"}) == []
    (error,) = errors("FelixConfiguration", {"logSeverityScreen": "Loud"})
    assert error.startswith(
        'spec.logSeverityScreen: Invalid value: "Loud": spec.logSeverityScreen in body should match'
    )
    assert errors("FelixConfiguration", {"reportingInterval": "30 seconds"}) != []


def test_bounds_int_or_string_and_nullable_items() -> None:
    (error,) = errors("BGPConfiguration", {"listenPort": 70000})
    assert (
        error
        == "spec.listenPort: Invalid value: 70000: spec.listenPort in body should be less than or equal to"
        " 65535"
    )
    assert errors("BGPConfiguration", {"listenPort": 179}) == []
    assert errors("FelixConfiguration", {"natPortRange": 5}) == []
    assert errors("FelixConfiguration", {"natPortRange": "32768:65535"}) == []
    assert errors("FelixConfiguration", {"natPortRange": True}) != []
    block = {
        "cidr": "10.244.1.0/24",
        "strictAffinity": False,
        "allocations": [0, None],
        "unallocated": [1],
        "attributes": [],
    }
    assert errors("IPAMBlock", block) == []
    assert errors("IPAMBlock", {**block, "allocations": ["0"]}) == [
        'spec.allocations[0]: Invalid value: "string": spec.allocations[0] in body must be of type integer:'
        ' "string"'
    ]


def test_unknown_fields_are_found_at_any_depth_and_pruned() -> None:
    obj = {
        "spec": {"cidr": "10.244.0.0/16", "vxlanMod": "Always", "nodeSelector": "all()"},
        "status": {"x": 1},
    }
    found = crd_schema.check(obj, schema("IPPool"))
    assert found.errors == [] and sorted(found.unknown) == ["spec.vxlanMod", "status"]
    crd_schema.prune(obj, found.unknown)
    assert obj == {"spec": {"cidr": "10.244.0.0/16", "nodeSelector": "all()"}}


def test_admit_answers_as_the_server() -> None:
    crd = next(
        d
        for d in real_docs(CALICO)
        if d["kind"] == "CustomResourceDefinition" and d["spec"]["names"]["kind"] == "IPPool"
    )
    crds = {("", crd["metadata"]["name"]): crd}
    rtype = ResourceType("crd.projectcalico.org", "v1", "ippools", "IPPool", False)
    bad = {"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8", "blockSize": "26"}}
    with pytest.raises(ApiError) as err:
        crd_schema.admit(crds, rtype, bad, strict=False)
    assert err.value.code == 422 and 'IPPool.crd.projectcalico.org "p" is invalid' in str(err.value)
    unknown = {"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8", "foo": 1}}
    with pytest.raises(ApiError) as err:
        crd_schema.admit(crds, rtype, unknown, strict=True)
    assert err.value.code == 400 and str(err.value) == 'strict decoding error: unknown field "spec.foo"'
    crd_schema.admit(crds, rtype, unknown, strict=False)
    assert unknown["spec"] == {"cidr": "10.0.0.0/8"}
    other = ResourceType("example.io", "v1", "things", "Thing", False)
    crd_schema.admit(crds, other, {"spec": {"anything": 1}}, strict=True)  # no CRD schema: a built-in
