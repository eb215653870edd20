#!/usr/bin/env bash
# Installs everything migrator and its lab need on a fresh Debian 12 machine (run as root).
# Idempotent: a second run only checks that everything is there.
#   --test   also the test-only tools: Debian's chromium (report screenshots), prometheus (the tests of the
#            prometheus check start their own server on 127.0.0.1) and the dev extras
set -euo pipefail
cd "$(dirname "$0")/.."
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

DEBIAN_PACKAGES=(
  iproute2 iptables ipset conntrack iputils-ping procps psmisc util-linux curl
  containernetworking-plugins bird2 dnsmasq-base openssh-server openssh-client
)

[ "$with_test" = 1 ] && DEBIAN_PACKAGES+=(chromium fonts-dejavu-core prometheus)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The lab runs its own sshd per node; the host's sshd service is not needed and stays as it was.
# The prometheus package enables a service listening on every interface (and may pull in the node
# exporter): the tests start their own server on loopback, so both services are stopped and disabled.
if [ "$with_test" = 1 ]; then
  for svc in prometheus prometheus-node-exporter; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

extras=""
[ "$with_test" = 1 ] && extras="[dev]"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".${extras}"
echo "setup: ok ($(python3 --version), migrator $(python3 -c 'import migrator; print(migrator.__version__)'))"
