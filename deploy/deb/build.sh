#!/usr/bin/env bash
# Builds target/debian/ftpgate_VERSION-1_ARCH.deb: the release binary, the man page
# and shell completions generated from it (clap_mangen, clap_complete), and the files
# [package.metadata.deb] in Cargo.toml lists. Installs cargo-deb from crates.io when
# missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cargo-deb >/dev/null; then
    cargo install --locked cargo-deb
fi
cargo build --release --locked
rm -rf target/assets
target/release/ftpgate generate-assets target/assets
gzip -9n target/assets/ftpgate.1
cargo deb --no-build --locked
ls target/debian/ftpgate_*.deb
