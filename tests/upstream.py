"""Where the real upstream files are (``shared/upstream``: flannel, Calico, Canal, Weave, Istio and the
Kubernetes e2e NetworkPolicy suite): ``$MIGRATOR_UPSTREAM``, else ``../shared/upstream`` beside the
repository, else ``/work/shared/upstream`` (a clone made elsewhere on a machine of this kind). Tests that
need them skip naming the path they looked at when none exists."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def upstream_dir() -> Path:
    candidates = [Path(p) for p in [os.environ.get("MIGRATOR_UPSTREAM", "")] if p]
    candidates += [ROOT.parent / "shared" / "upstream", Path("/work/shared/upstream")]
    for c in candidates:
        if (c / "SOURCES.md").exists():
            return c
    return candidates[0]


UPSTREAM = upstream_dir()
