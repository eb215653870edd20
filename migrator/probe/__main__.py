"""``python -m migrator.probe``: the probe agent (see :mod:`migrator.probe.agent`)."""

from __future__ import annotations

import sys

from migrator.probe.agent import main

if __name__ == "__main__":
    sys.exit(main())
