#!/usr/bin/env bash
# The main job on the lab, from a fresh machine: install, build a fresh 4-node flannel lab with bookinfo,
# verify every kind of reachability, migrate it live to Calico node by node, verify again. The lab stays
# up afterwards (`migrator lab status`, `migrator runs`, the run's report.html); `migrator lab down`
# removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
PLAN="${MIGRATOR_MAIN_PLAN:-plans/flannel-to-calico.yaml}"

migrator lab down >/dev/null 2>&1 || true   # start from a fresh flannel lab
migrator lab up --nodes 4 --cni flannel --app bookinfo
migrator verify
migrator apply "$PLAN" --yes
migrator verify
migrator runs
