#!/usr/bin/env bash
# Builds the Debian package target/debian/iewatch_VERSION_ARCH.deb with cargo-deb (see
# [package.metadata.deb] in Cargo.toml): the release binary, stripped by cargo-deb, plus
# man pages and shell completions generated from the CLI definition by that binary.
# Extra arguments go to cargo deb (e.g. --deb-version 0.1.0-2).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
cargo build --release --locked

assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/iewatch man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
target/release/iewatch completions bash > "$assets/completions/iewatch"
target/release/iewatch completions zsh > "$assets/completions/_iewatch"
target/release/iewatch completions fish > "$assets/completions/iewatch.fish"

cargo deb --no-build --locked --strip "$@"
