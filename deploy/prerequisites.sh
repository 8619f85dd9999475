#!/usr/bin/env bash
# Installs the Debian packages that provide the given commands when they are missing,
# and makes sure the `ftp` user exists (vsftpd serves anonymous sessions as it).
# usage: prerequisites.sh COMMAND:PACKAGE ...     e.g. vsftpd:vsftpd ip:iproute2
# Used by tests/run.sh, deploy/demo.sh, bench/run.sh and bench/soak.sh.
set -euo pipefail
missing=()
for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        # The packages' own services are not needed; each script starts what it uses.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "missing: ${missing[*]} (run as root to install them)" >&2
    fi
fi
if [ "$(id -u)" = 0 ]; then
    id ftp >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin ftp
fi
