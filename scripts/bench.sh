#!/usr/bin/env bash
# Benchmarks drover on the local services with release binaries. Not part of the test suite:
# figures depend on the machine. Usage: scripts/bench.sh [TASKS] [SLOTS_PER_WORKER]
#   - end to end: TASKS (default 10000) tasks of /bin/true on two workers, first publish to last completion
#   - submission rate: TASKS tasks added with no worker running
#   - Redis bytes per completed task
#   - dispatch latency on an idle pool (p50 over 50 single tasks)
#   - peak memory of `drover task create` streaming a JSON Lines file (BENCH_STREAM=N tasks, default 0 = skip)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-10000}"
SLOTS="${2:-8}"
bash scripts/services.sh >/dev/null
. scripts/env.sh
cargo build --release --workspace --bins -q
BIN="$ROOT/target/release"
export DROVER_ACCOUNT="bench$$"
WORK="$ROOT/target/bench/$DROVER_ACCOUNT"
mkdir -p "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BIN/drover" pool delete --pool-id bench >/dev/null 2>&1 || true
  rabbitmqctl delete_queue "drover.$DROVER_ACCOUNT.dead" >/dev/null 2>&1 || true
  for pattern in "drover:$DROVER_ACCOUNT:*" "drover:{$DROVER_ACCOUNT:*"; do
    redis-cli --scan --pattern "$pattern" | xargs -r -n 1000 redis-cli del >/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
d() { "$BIN/drover" "$@"; }
gen() { python3 -c "import sys
for i in range(int(sys.argv[1])): print('{\"id\":\"t%07d\",\"commandLine\":\"/bin/true\"}' % i)" "$1"; }
now() { date +%s.%N; }

d pool create --pool-id bench --task-slots-per-node "$SLOTS" >/dev/null
gen "$N" > "$WORK/tasks.jsonl"

# Submission rate, no worker running.
d job create --job-id submit --pool-id bench >/dev/null
t0=$(now); d task create --job-id submit --json-file "$WORK/tasks.jsonl" >/dev/null; t1=$(now)
python3 -c "print(f'submit: {$N} tasks in {$t1-$t0:.2f}s = {$N/($t1-$t0):.0f} tasks/s')"
d job delete --job-id submit
d pool delete --pool-id bench; d pool create --pool-id bench --task-slots-per-node "$SLOTS" >/dev/null

# End to end on two workers.
mem0=$(redis-cli info memory | awk -F: '/^used_memory:/{print $2+0}')
for n in 1 2; do
  "$BIN/drover-worker" --pool-id bench --work-dir "$WORK/nodes" >"$WORK/worker-$n.log" 2>&1 &
  pids+=("$!")
done
sleep 1
d job create --job-id e2e --pool-id bench >/dev/null
t0=$(now)
d task create --job-id e2e --json-file "$WORK/tasks.jsonl" >/dev/null
d job wait --job-id e2e --timeout 600 >/dev/null 2>&1
t1=$(now)
python3 -c "print(f'end to end: {$N} tasks of /bin/true on 2 workers x $SLOTS slots in {$t1-$t0:.2f}s = {$N/($t1-$t0):.0f} tasks/s')"
mem1=$(redis-cli info memory | awk -F: '/^used_memory:/{print $2+0}')
python3 -c "print(f'redis: {($mem1-$mem0)/$N:.0f} bytes per completed task (used_memory delta over {$N} tasks)')"
sample=$(redis-cli --scan --pattern "drover:{$DROVER_ACCOUNT:e2e}:t:*" | head -1 || true)
echo "redis: one record is $(redis-cli memory usage "$sample") bytes (MEMORY USAGE $sample)"

# A /metrics scrape with the e2e job's tasks recorded (median of 20).
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$BIN/drover-monitor" --listen "127.0.0.1:$port" >"$WORK/monitor.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 20); do curl -s -o /dev/null -w "%{time_total}\n" "127.0.0.1:$port/metrics"; done | sort -n | awk -v n="$N" \
  '{a[NR]=$1} END {printf "scrape: /metrics in %.1f ms (median of %d) with %d tasks recorded\n", a[int((NR+1)/2)]*1000, NR, n}'

# Dispatch latency on an idle pool: task creationTime to startTime.
d job create --job-id idle --pool-id bench >/dev/null
for i in $(seq 1 50); do
  d task create --job-id idle --task-id "i$i" --command-line /bin/true >/dev/null
  d job wait --job-id idle --timeout 30 >/dev/null 2>&1
done
d task list --job-id idle -o json | python3 -c "
import json,sys,datetime,statistics
p=lambda s: datetime.datetime.fromisoformat(s.replace('Z','+00:00'))
lat=sorted((p(t['executionInfo']['startTime'])-p(t['creationTime'])).total_seconds()*1000 for t in json.load(sys.stdin))
print(f'dispatch on an idle pool: p50 {statistics.median(lat):.1f} ms, p90 {lat[int(len(lat)*0.9)]:.1f} ms over {len(lat)} tasks (creationTime to startTime)')"

if [ "${BENCH_STREAM:-0}" -gt 0 ]; then
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  pids=()
  gen "$BENCH_STREAM" > "$WORK/big.jsonl"
  d job create --job-id big --pool-id bench >/dev/null
  /usr/bin/time -f "stream: $BENCH_STREAM tasks, peak RSS %M KB, %e s" "$BIN/drover" task create --job-id big --json-file "$WORK/big.jsonl" >/dev/null
  d job delete --job-id big
fi
