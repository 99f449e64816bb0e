#!/usr/bin/env bash
# The main job end to end, on local services:
#   upload inputs and an application script to S3, create a pool, start two
#   workers, create a job, add one word-count task per input file, wait for the
#   job, download the outputs and show the top words of each.
# Exits non-zero if any step fails. Workers are stopped (SIGTERM) on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
mkdir -p target

# The services (apt-get, and cargo install of the S3 server on a fresh machine) get ready in the
# background while drover builds: each of the two builds spends minutes in single-threaded
# steps that the other fills.
step "services: RabbitMQ and Redis (Debian packages, about a minute the first time) and the local S3 server s3s-fs (built from crates.io the first time: several minutes, alongside drover); log in target/services.log"
bash scripts/services.sh >target/services.log 2>&1 &
services_pid=$!

step "build drover and drover-worker (release; the first time about 8 minutes on 2 cores, then seconds)"
cargo build --release -p drover-submitter -p drover-worker

step "wait for the services"
if ! wait "$services_pid"; then
  tail -n 30 target/services.log >&2
  die "scripts/services.sh failed; see target/services.log"
fi
grep -E '^(redis|rabbitmq|s3):' target/services.log || true
# shellcheck source=scripts/env.sh
. scripts/env.sh
export DROVER_ACCOUNT="${DROVER_ACCOUNT:-demo}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
drover() { "$BIN/drover" "$@"; }

DATA=scripts/sample-data
WORK=target/demo
POOL=demo-pool
JOB="wordcount-$(date +%s)"
OUTPUT_URL="s3://drover/demo/output/$JOB"
mkdir -p "$WORK/nodes"
rm -rf "$WORK/output"

inputs=()
for f in "$DATA"/input/*; do
  [[ -f "$f" ]] || continue
  name="$(basename "$f")"
  # The names go into JSON and task ids unquoted: keep them plain.
  [[ "$name" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "unsupported input file name: $name"
  inputs+=("$name")
done
((${#inputs[@]} > 0)) || die "no input files in $DATA/input"

step "upload ${#inputs[@]} input files and the application"
drover storage upload "$DATA/input" s3://drover/demo/input/
drover storage upload "$DATA/app" s3://drover/demo/app/

step "pool $POOL"
drover pool create --pool-id "$POOL" --task-slots-per-node 2

step "start two workers"
worker_pids=()
stop_workers() {
  local status=$? pid i
  ((${#worker_pids[@]} > 0)) || return "$status"
  echo "==> stopping workers ${worker_pids[*]}" >&2
  for pid in "${worker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # SIGTERM drains; give them a bounded time, then kill what is left.
  for ((i = 0; i < 30; i++)); do
    local alive=0
    for pid in "${worker_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 1
  done
  for pid in "${worker_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  return "$status"
}
trap stop_workers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for n in 1 2; do
  "$BIN/drover-worker" --pool-id "$POOL" --work-dir "$WORK/nodes" >"$WORK/worker-$n.log" 2>&1 &
  worker_pids+=("$!")
done
sleep 1
for n in 1 2; do
  if ! kill -0 "${worker_pids[$((n - 1))]}" 2>/dev/null; then
    tail -n 20 "$WORK/worker-$n.log" >&2 || true
    die "worker $n exited at start; see $WORK/worker-$n.log"
  fi
done
echo "workers: ${worker_pids[*]} (logs in $WORK/worker-1.log, $WORK/worker-2.log)"

step "job $JOB"
drover job create --job-id "$JOB" --pool-id "$POOL"

step "add ${#inputs[@]} tasks"
TASKS="$WORK/tasks-$JOB.jsonl"
: >"$TASKS"
for name in "${inputs[@]}"; do
  printf '{"id":"count-%s","commandLine":"/bin/sh app/wordcount.sh %s","resourceFiles":[{"httpUrl":"s3://drover/demo/input/%s","filePath":"%s"},{"httpUrl":"s3://drover/demo/app/wordcount.sh","filePath":"app/wordcount.sh"}],"outputFiles":[{"filePattern":"*.counts.txt","destination":{"container":{"containerUrl":"%s"}},"uploadOptions":{"uploadCondition":"taskSuccess"}}]}\n' \
    "${name%.*}" "$name" "$name" "$name" "$OUTPUT_URL" >>"$TASKS"
done
drover task create --job-id "$JOB" --json-file "$TASKS"

step "wait for job $JOB"
if ! drover job wait --job-id "$JOB" --timeout 300; then
  echo "demo: job $JOB did not succeed" >&2
  drover job task-counts --job-id "$JOB" >&2 || true
  drover task list --job-id "$JOB" >&2 || true
  exit 1
fi
drover job task-counts --job-id "$JOB"

step "download $OUTPUT_URL"
drover storage download "$OUTPUT_URL" "$WORK/output"

step "top 5 words per input"
mapfile -t counts < <(find "$WORK/output" -type f -name '*.counts.txt' | sort)
((${#counts[@]} == ${#inputs[@]})) \
  || die "expected ${#inputs[@]} counts files in $WORK/output, found ${#counts[@]}"
for f in "${counts[@]}"; do
  echo "--- ${f#"$WORK"/output/}"
  head -n 5 "$f"
done
echo
echo "demo: job $JOB succeeded; outputs in $WORK/output"

# A parametric sweep with a merge task (README, "Sweeps and pipelines"): ten tasks square their
# parameter, the merge task depends on all ten (a task id range) and gathers their outputs.
SWEEP="sweep-$(date +%s)"
SWEEP_URL="s3://drover/demo/sweep/$SWEEP"
step "parametric sweep $SWEEP: 10 tasks and a merge task that depends on them"
cat >"$WORK/$SWEEP.json" <<JSON
{"id": "$SWEEP", "poolInfo": {"poolId": "$POOL"}, "usesTaskDependencies": true,
 "onAllTasksComplete": "terminatejob", "priority": 100}
JSON
drover job create --json-file "$WORK/$SWEEP.json" >/dev/null
: >"$WORK/$SWEEP.jsonl"
for a in $(seq 1 10); do
  cat >>"$WORK/$SWEEP.jsonl" <<JSON
{"id": "$a", "commandLine": "/bin/sh -c 'echo \$DROVER_TASK_ID \$((DROVER_TASK_ID * DROVER_TASK_ID)) > square.txt'", "outputFiles": [{"filePattern": "square.txt", "destination": {"container": {"containerUrl": "$SWEEP_URL/parts", "path": "$a.txt"}}, "uploadOptions": {"uploadCondition": "taskSuccess"}}]}
JSON
done
cat >>"$WORK/$SWEEP.jsonl" <<JSON
{"id": "merge", "commandLine": "/bin/sh -c 'cat parts/*.txt | sort -n > squares.txt'", "dependsOn": {"taskIdRanges": [{"start": 1, "end": 10}]}, "resourceFiles": [{"storageContainerUrl": "$SWEEP_URL/parts", "filePath": "parts"}], "outputFiles": [{"filePattern": "squares.txt", "destination": {"container": {"containerUrl": "$SWEEP_URL", "path": "squares.txt"}}}]}
JSON
drover task create --job-id "$SWEEP" --json-file "$WORK/$SWEEP.jsonl" >/dev/null
drover job wait --job-id "$SWEEP" --timeout 120 >/dev/null || die "sweep $SWEEP did not succeed"
drover storage download "$SWEEP_URL/squares.txt" "$WORK/$SWEEP" >/dev/null
sum=$(awk '{s += $2} END {print s}' "$WORK/$SWEEP/squares.txt")
[[ "$sum" == 385 ]] || die "sweep: the squares of 1..10 add up to $sum, not 385"
echo "merge gathered $(wc -l <"$WORK/$SWEEP/squares.txt") results; sum of squares = $sum"
reason=$(drover job show --job-id "$SWEEP" -o json | grep -o '"terminateReason": *"[A-Za-z]*"' || true)
echo "demo: sweep $SWEEP succeeded and completed by itself ($reason)"
echo
echo "demo: done. For the commands of README's \"Using it\" in this shell: . scripts/env.sh"
