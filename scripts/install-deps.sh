#!/usr/bin/env bash
# Installs the Debian packages (and the Python test peer) Sluice needs.
# Idempotent: skips apt when everything is already present.
set -euo pipefail
PKGS=(libdpdk-dev dpdk-dev dpdk dpdk-doc make gcc libipsec-mb-dev libsodium-dev libnuma-dev libpcap-dev pkg-config python3-scapy python3-cryptography tshark)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
