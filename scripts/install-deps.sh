#!/usr/bin/env bash
# Installs everything tlsgate needs to build, test and benchmark, from Debian 12 packages only.
# Safe to run again: when every package is present it does nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  android-libboringssl-dev liburing-dev libjemalloc-dev libinih-dev libsrtp2-dev
  libmicrohttpd-dev libcmocka-dev libbenchmark-dev
  clang libclang-rt-14-dev clang-format
  openssl sip-tester python3 curl procps util-linux
  haproxy stunnel4 nginx libnginx-mod-stream
  kamailio kamailio-tls-modules
  rtpengine-daemon
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# bench/compare/media_bench.py starts its own rtpengine (foreground, user-space, private ports);
# Debian enables the system service, which would hold the ng port and 30000-40000 and load
# iptables rules.
if [[ " ${missing[*]} " == *" rtpengine-daemon "* ]] && command -v systemctl >/dev/null &&
  [ -d /run/systemd/system ]; then
  systemctl disable --now rtpengine-daemon.service >/dev/null 2>&1 || true
fi
echo "install-deps: done"
