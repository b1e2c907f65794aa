#!/usr/bin/env bash
# Install the Debian 12 packages secconf and its tests need.
#
# Idempotent and fast when everything is present (one dpkg-query).  Called by
# `make` on a developer machine or CI, and meant for a container build too.
# Services that Debian would start on install (Redis on 6379, Kamailio on
# 5060) are kept from starting: the tests start their own on free ports, and
# other programs on a shared machine may hold the common ones.
set -euo pipefail

packages=(
  python3 python3-venv          # the interpreter Kamailio's app_python3 embeds (3.11)
  kamailio kamailio-python3-modules
  kamailio-tls-modules          # tls.so: SIP over TLS towards participants (-A WITH_TLS)
  redis-server
  sip-tester                    # sipp
  baresip-core                  # a real SRTP phone for the tests
  linphone-cli                  # linphonec: the other real SRTP phone (tests/interop)
  debootstrap zstd curl xz-utils  # the Debian sid tree with Asterisk 22 (docker/asterisk-tree.sh)
  docker-compose                # validates docker/compose.yaml in the tests (no engine needed)
  openssl                       # `openssl cms`: the independent CMS codec tests/unit/test_cms_openssl.py runs
  tshark                        # Wireshark's dissectors: the SIP NOTIFYs on the wire, checked by a codec we did not write
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)

policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  # invoke-rc.d consults this: 101 = "action forbidden", so no service starts.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  made_policy=1
fi
cleanup() { if [[ $made_policy -eq 1 ]]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
