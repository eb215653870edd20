#!/usr/bin/env bash
# The main job on the lab, from a fresh machine: install, bring up a 4-node flannel lab with bookinfo,
# verify every kind of reachability, run a plan on it, verify again. The lab stays up afterwards for
# you to look at (`migrator lab status`, `migrator runs`); `migrator lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
PLAN="${MIGRATOR_MAIN_PLAN:-plans/examples/hello.yaml}"

migrator lab up --nodes 4 --cni flannel --app bookinfo
migrator verify
migrator plan "$PLAN"
migrator apply "$PLAN" --yes
migrator verify
migrator runs
