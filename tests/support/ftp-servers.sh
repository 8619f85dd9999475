#!/usr/bin/env bash
# Unpacks pure-ftpd and ProFTPD (with mod_tls) for the differential tests
# (tests/differential.rs) and the FTPS tests against them (tests/ftps_server.rs).
# Both conflict with vsftpd as Debian packages, so they are fetched with
# `apt-get download` and unpacked with `dpkg -x` into DIR (default target/ftp-servers)
# instead of installed; the libraries ProFTPD links against are installed (they
# conflict with nothing), and pure-ftpd's privilege-separation user is created.
# usage: ftp-servers.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-target/ftp-servers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ "$(id -u)" != 0 ]; then
    echo "ftp-servers.sh: run as root (apt-get, useradd)" >&2
    exit 1
fi
libs=(libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3 libsodium23)
need_libs=()
for lib in "${libs[@]}"; do
    dpkg -s "$lib" >/dev/null 2>&1 || need_libs+=("$lib")
done
if [ ! -x "$dir/root/usr/sbin/pure-ftpd" ] || [ ! -x "$dir/root/usr/sbin/proftpd" ] ||
    [ ! -e "$dir/root/usr/lib/proftpd/mod_tls.so" ] || ((${#need_libs[@]})); then
    apt-get update -qq
    if ((${#need_libs[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_libs[@]}"
    fi
    debs="$dir/debs"
    mkdir -p "$debs"
    # apt drops privileges to _apt for downloads; the folder must be writable by it.
    chmod 0777 "$debs"
    # proftpd-mod-crypto carries mod_tls, for the FTPS tests (tests/ftps_server.rs).
    (cd "$debs" && apt-get download -qq pure-ftpd proftpd-core proftpd-mod-crypto)
    for deb in "$debs"/*.deb; do
        dpkg -x "$deb" "$dir/root"
    done
fi
# pure-ftpd's privilege-separated child runs as this user.
id pure-ftpd >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group pure-ftpd
"$dir/root/usr/sbin/proftpd" -v >/dev/null
"$dir/root/usr/sbin/pure-ftpd" --help >/dev/null 2>&1 || true
echo "pure-ftpd and proftpd in $dir/root/usr/sbin"
