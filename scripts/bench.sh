#!/usr/bin/env bash
# Benchmarks drover on the local services with release binaries: starts what is missing, builds,
# and runs drover-bench (bench/), which measures the bare pipeline (lapin and redis alone, before
# and after drover) as the yardstick, drover end to end and its ratio to it, submission, dispatch
# latency, Redis bytes, the machine's CPU per task by party (tasks, workers, submitter, broker,
# Redis), staging against aws-sdk-s3 alone and a /metrics scrape, then prints a table and a
# JSON line. Not part of the test suite: figures depend on the machine.
# Usage: scripts/bench.sh [drover-bench flags: --tasks N --workers W --slots S --submit-tasks M
#        --dispatch-samples K --scrape-tasks T --only PHASES --bin-dir DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh >/dev/null
. scripts/env.sh
cargo build --release --workspace --bins -q
exec "$ROOT/target/release/drover-bench" "$@"
