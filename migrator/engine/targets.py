"""Target resolution: the one place that turns ``--target lab|kube|fake[:NAME]`` into a :class:`Target`."""

from __future__ import annotations

import importlib
from typing import Any

from migrator.errors import UsageError
from migrator.ports import Target

TARGET_KINDS = ("lab", "kube", "fake")


def _optional(module: str, attr: str, what: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise UsageError(
            f"the {what} target is not available in this build ({module} is missing);"
            " use --target fake for a demo"
        ) from None
    if not hasattr(mod, attr):
        raise UsageError(f"the {what} target is not available in this build ({module}.{attr} is missing)")
    return getattr(mod, attr)


def open_target(spec: str) -> Target:
    """``fake``, ``lab`` / ``lab:NAME`` (the embedded lab) or ``kube`` / ``kube:CONTEXT``."""
    kind, _, name = spec.strip().partition(":")
    if kind == "fake":
        from migrator.adapters.fake import fake_target  # noqa: PLC0415 - optional, cheap

        return fake_target(name="fake" if not name else f"fake:{name}")
    if kind == "lab":
        opener = _optional("migrator.adapters.lab", "open_lab_target", "lab")
        target = opener(name or "default")
        if not isinstance(target, Target):
            raise UsageError("migrator.adapters.lab.open_lab_target did not return a Target")
        return target
    if kind == "kube":
        opener = _optional("migrator.adapters.kube", "open_kube_target", "kube")
        target = opener(name or None)
        if not isinstance(target, Target):
            raise UsageError("migrator.adapters.kube.open_kube_target did not return a Target")
        return target
    raise UsageError(f"unknown target {spec!r}: use one of {', '.join(TARGET_KINDS)} (optionally KIND:NAME)")
