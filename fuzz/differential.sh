#!/usr/bin/env bash
# The long run of the differential test (tests/differential.rs): random control-channel
# streams through ftpgate's framer and parser and, what ftpgate would forward, to
# vsftpd, pure-ftpd and ProFTPD, for SECONDS (default 3600) with a fresh seed every
# round of 500 streams. A disagreement stops the run and prints the stream, shrunk,
# as hex: add it to tests/differential/regressions.txt. Run as root.
# usage: bash fuzz/differential.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
bash deploy/prerequisites.sh vsftpd:vsftpd unshare:util-linux
bash tests/support/ftp-servers.sh target/ftp-servers
FTPGATE_DIFF_SECONDS="$seconds" FTPGATE_DIFF_CASES=500 \
    cargo test --test differential -- --nocapture
