#!/usr/bin/env bash
# Runs the whole test suite (unit tests and real-lab integration tests; the lab needs root).
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q "$@"
rc=$?
# pytest exits 5 when it collected no test: that is a failure for us, not a pass.
exit "$rc"
