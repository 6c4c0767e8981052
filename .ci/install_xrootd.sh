#!/usr/bin/env bash
# Installs Debian's XRootD server (xrootd-server) for the XRootD server on localhost that
# tests/test_xrootd.py starts (tests/xrootd_server.py). Idempotent; needs root (apt-get).
# The package's service is not started or enabled: the test writes its own configuration into a
# temporary directory and runs the daemon itself. The client side (the XRootD python bindings and
# fsspec-xrootd) comes from PyPI with the project's dependencies.
set -eo pipefail

if command -v xrootd >/dev/null 2>&1; then
    echo "install_xrootd: xrootd already installed ($(xrootd -v 2>&1 | head -1))"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_xrootd: needs root to install xrootd-server" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# keep the package's service from starting (there is no init system in a container anyway)
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "${policy}" ]; then
    printf '#!/bin/sh\nexit 101\n' > "${policy}" && chmod +x "${policy}" && created_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends xrootd-server >/dev/null
[ "${created_policy}" = "1" ] && rm -f "${policy}"
echo "install_xrootd: installed xrootd $(xrootd -v 2>&1 | head -1)"
