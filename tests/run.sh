#!/usr/bin/env bash
# The project's test command: installs what the tests need when it is missing
# (Debian packages: vsftpd, curl, lftp, python3, prometheus for promtool, nftables
# and iproute2 for the network-namespace lab), then
# runs formatting, lint and every test. Run it as root: vsftpd's anonymous chroot
# needs root, and so will the network-namespace tests. Under CI=true a missing
# prerequisite fails the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in vsftpd:vsftpd curl:curl lftp:lftp python3:python3 promtool:prometheus nft:nftables ip:iproute2 ss:iproute2; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        # The package's own service is not needed: the tests start their own vsftpd.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "missing: ${missing[*]} (run as root to install them)" >&2
    fi
fi
# vsftpd serves anonymous sessions as this user; the package creates it.
id ftp >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin ftp

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --locked 2>&1 | tee "$results"
# A short fuzz run of the codec, the session engine and the rule parser (seconds each);
# the long run is documented in fuzz/run.sh.
bash fuzz/run.sh 10
# A smoke run of the benchmark: proves the script works, measures nothing (bench/README.md).
bash bench/run.sh --smoke

# The totals of every cargo test binary, as the last line.
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "summary: %d passed, %d failed\n", passed, failed }' "$results"
