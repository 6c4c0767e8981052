#!/usr/bin/env bash
# Installs Debian's Slurm (slurmctld, slurmd, client commands) and munge for the single-node Slurm
# cluster that tests/test_batch_slurm.py starts on localhost. Idempotent; needs root (apt-get).
# The packages' own services are not started or enabled: the test writes its own slurm.conf and
# munge key into a temporary directory and runs the daemons itself.
set -eo pipefail

if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && \
        command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    echo "install_slurm: slurm and munge already installed ($(slurmctld -V))"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_slurm: needs root to install slurmctld slurmd slurm-client munge" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# keep the packages' services from starting (there is no init system in a container anyway)
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "${policy}" ]; then
    printf '#!/bin/sh\nexit 101\n' > "${policy}" && chmod +x "${policy}" && created_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
[ "${created_policy}" = "1" ] && rm -f "${policy}"
echo "install_slurm: installed $(slurmctld -V), $(munged --version 2>&1 | head -1)"
