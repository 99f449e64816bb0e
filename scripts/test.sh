#!/usr/bin/env bash
# The test command: the format and lint gates, then start the local services, build every
# binary, run every test.
# Extra arguments go to `cargo test` after --workspace, e.g.
#   bash scripts/test.sh -p drover-worker
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "== gates: cargo fmt --check, cargo clippy -D warnings (a few minutes the first time)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

bash scripts/services.sh --with-prometheus --with-azurite --with-batch-sdks
# shellcheck source=scripts/env.sh
. scripts/env.sh

cargo build --workspace --bins
exec cargo test --workspace "$@" -- --test-threads 4
