"""Target resolution: the one place that turns ``--target KIND[:NAME]`` into a :class:`Target`.

Built in: ``lab`` / ``lab:NAME`` (the embedded lab) and ``kube`` / ``kube:CONTEXT`` (a real cluster). Their
modules are imported on first use (the Kubernetes client is slow to import). Other kinds come from the
entry-point group ``migrator.targets`` (``KIND = "module:function"``, the function takes the ``NAME`` part
or ``None``): migrator itself registers ``fake``, the in-memory target of :mod:`migrator.testing.fake`
for demos and tests, so that no product module imports test code.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from migrator.errors import UsageError
from migrator.ports import Target

ENTRY_POINTS = "migrator.targets"
BUILTIN_KINDS = ("lab", "kube")

Opener = Callable[[str | None], Target]


def _open_lab(name: str | None) -> Target:
    from migrator.targets.lab.cluster import open_lab_target  # noqa: PLC0415 - on first use

    return open_lab_target(name or "default")


def _open_kube(name: str | None) -> Target:
    from migrator.targets.kube.target import open_kube_target  # noqa: PLC0415 - heavy: the kube client

    return open_kube_target(name or None)


_BUILTIN: dict[str, Opener] = {"lab": _open_lab, "kube": _open_kube}


def plugin_kinds() -> dict[str, str]:
    """Target kinds registered by installed packages: kind -> ``module:function``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS) if ep.name not in _BUILTIN}


def target_kinds() -> list[str]:
    return [*BUILTIN_KINDS, *sorted(plugin_kinds())]


def open_target(spec: str) -> Target:
    """``lab[:NAME]``, ``kube[:CONTEXT]`` or ``KIND[:NAME]`` of an installed entry point."""
    kind, _, name = spec.strip().partition(":")
    opener = _BUILTIN.get(kind)
    if opener is None:
        found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == kind]
        if not found:
            raise UsageError(
                f"unknown target {spec!r}: use one of {', '.join(target_kinds())} (optionally KIND:NAME)"
            )
        try:
            opener = found[0].load()
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"the {kind} target ({found[0].value}) cannot be loaded: {exc}") from None
    target = opener(name or None)
    if not isinstance(target, Target):
        raise UsageError(f"the {kind} target's opener did not return a Target")
    return target
