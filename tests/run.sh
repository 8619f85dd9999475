#!/usr/bin/env bash
# The project's test command: installs what the tests need when it is missing
# (Debian packages: vsftpd, curl, lftp, python3, prometheus for promtool, nftables
# and iproute2 for the network-namespace lab, logrotate, ca-certificates for `tls
# server … ca system`, openssl for a client that renegotiates, haproxy to read
# ftpgate's PROXY headers, keepalived and ipvsadm for the scale-out test, which also
# boots Debian's kernel in a VM where this one has no IPVS: tests/support/vm.sh
# installs qemu-system-x86, busybox-static, kmod and cpio for that and fetches
# linux-image-amd64; cargo-deb from crates.io),
# builds the .deb tests/package.rs installs, then
# unpacks pure-ftpd and ProFTPD for the differential test, then
# runs formatting, lint and every test. Run it as root: vsftpd's anonymous chroot
# needs root, and so will the network-namespace tests. Under CI=true a missing
# prerequisite fails the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/prerequisites.sh vsftpd:vsftpd curl:curl lftp:lftp python3:python3 \
    promtool:prometheus nft:nftables ip:iproute2 ss:iproute2 unshare:util-linux \
    setpriv:util-linux systemd-analyze:systemd \
    logrotate:logrotate update-ca-certificates:ca-certificates openssl:openssl \
    haproxy:haproxy keepalived:keepalived ipvsadm:ipvsadm
# pure-ftpd and ProFTPD for the differential test, unpacked beside vsftpd (they
# conflict with it as packages). Without root the test skips, or fails under CI=true.
if [ "$(id -u)" = 0 ]; then
    bash tests/support/ftp-servers.sh target/ftp-servers
fi

# The .deb tests/package.rs installs (cargo-deb comes from crates.io when missing).
bash deploy/deb/build.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --locked 2>&1 | tee "$results"
# A short fuzz run of the codec, the session engine and the rule parser (seconds each);
# the long run is documented in fuzz/run.sh.
bash fuzz/run.sh 10
# A smoke run of the benchmark, every configuration and floor: proves the script and
# the floors work (each transfer is checked), measures nothing (bench/README.md).
CONFIGS="routing helper lineproxy relayfloor kernelfloor kernelfloor-tokio redirect tproxy redirect-kernel tproxy-kernel" \
    bash bench/run.sh --smoke
python3 bench/idle.py --ftpgate target/release/ftpgate --sessions 200

# The totals of every cargo test binary, as the last line.
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "summary: %d passed, %d failed\n", passed, failed }' "$results"
