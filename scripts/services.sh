#!/usr/bin/env bash
# Make sure the local services drover needs are installed and running:
#   RabbitMQ on 127.0.0.1:5672 (with its management API on 15672), Redis on 127.0.0.1:6379,
#   s3s-fs (S3) on 127.0.0.1:9014.
#   --with-prometheus  also install Prometheus (with promtool) for the monitor's tests and the
#                      README's monitoring section; it is not started (the tests run their own).
#   --with-azurite     also install Azurite, the Azure Storage emulator (npm, into
#                      target/tools), for the Azure Blob tests; not started (they run their own).
#   --with-batch-sdks  also install the official Azure Batch Python SDKs (azure-batch 15.1.0
#                      and 14.2.0 from PyPI, each in a virtual environment under target/tools)
#                      for drover-api's acceptance tests.
# Idempotent: installs only what is absent, starts only what is not running, and
# leaves everything running when it exits. Meant to be executed (not sourced) as
# root on Debian with the Rust toolchain; `source scripts/env.sh` afterwards for
# the matching environment variables.
set -euo pipefail

WITH_PROMETHEUS=0
WITH_AZURITE=0
WITH_BATCH_SDKS=0
for arg in "$@"; do
  case "$arg" in
    --with-prometheus) WITH_PROMETHEUS=1 ;;
    --with-azurite) WITH_AZURITE=1 ;;
    --with-batch-sdks) WITH_BATCH_SDKS=1 ;;
    *) echo "usage: services.sh [--with-prometheus] [--with-azurite] [--with-batch-sdks]" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin"

S3_PORT=9014
S3_DATA="$ROOT/target/s3"
S3_LOG="$ROOT/target/s3s-fs.log"
RABBITMQ_LOG="$ROOT/target/rabbitmq-start.log"
RABBITMQ_WAIT_SECS=90
S3_WAIT_SECS=30
REDIS_WAIT_SECS=15

die() { echo "services: $*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_for SECONDS COMMAND...: poll COMMAND once a second until it succeeds.
wait_for() {
  local secs=$1; shift
  local i
  for ((i = 0; i < secs; i++)); do
    if "$@"; then return 0; fi
    sleep 1
  done
  "$@"
}

mkdir -p "$ROOT/target"
# close_fds: close every file descriptor above 2 in the current (sub)shell.
# run_clean COMMAND...: run COMMAND that way, so a daemon it starts holds neither
# our lock nor a pipe of whoever called us (which could make the caller hang).
close_fds() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}
run_clean() { (close_fds; exec "$@"); }

# Serialise concurrent runs (e.g. two test scripts started at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ROOT/target/.services.lock"
  flock -w 300 9 || die "timed out waiting for another services.sh run to finish"
fi

# ---- install what is absent ------------------------------------------------
# Debian packages: the broker and Redis, iproute2 (the tests' network namespaces), openssl (the
# tests' TLS certificates), socat (the tests' TLS fronts for the broker and S3); Prometheus (with
# promtool) only when asked.
missing=()
needed=(rabbitmq-server redis-server ip openssl socat)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
if ((WITH_PROMETHEUS)); then
  needed+=(prometheus promtool)
  { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
fi
if ((WITH_AZURITE)); then
  needed+=(node npm)
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
fi
if ((WITH_BATCH_SDKS)); then
  needed+=(python3)
  python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3 python3-venv)
fi
if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and apt-get is not available; install them by hand"
  echo "services: installing ${missing[*]} with apt-get (the first time: about a minute)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  run_clean apt-get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  for cmd in "${needed[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still not found after apt-get install"
  done
fi

# Azurite, pinned, into the project's own folder (the tests start it on ports of their own).
AZURITE_VERSION=3.37.0
AZURITE="$ROOT/target/tools/node_modules/.bin/azurite-blob"
if ((WITH_AZURITE)) && ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$ROOT/target/tools/node_modules/azurite/package.json"; then
  echo "services: installing Azurite $AZURITE_VERSION with npm into target/tools (the first time: about a minute)" >&2
  mkdir -p "$ROOT/target/tools"
  npm install --prefix "$ROOT/target/tools" --no-audit --no-fund --loglevel error "azurite@$AZURITE_VERSION" >&2 \
    || die "npm install azurite failed"
  [[ -x "$AZURITE" ]] || die "azurite-blob still not found after npm install"
fi

# The Azure Batch SDKs, pinned, each in a virtual environment of the project's own.
if ((WITH_BATCH_SDKS)); then
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for the Batch SDK tests"
  for sdk in 15.1.0 14.2.0; do
    venv="$ROOT/target/tools/batch-sdk-$sdk"
    if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('azure-batch') == '$sdk'" 2>/dev/null; then
      echo "services: installing azure-batch $sdk from PyPI into target/tools/batch-sdk-$sdk" >&2
      python3 -m venv "$venv" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "azure-batch==$sdk" >&2 \
        || die "pip install azure-batch==$sdk failed"
    fi
  done
fi

S3S_FS="$(command -v s3s-fs 2>/dev/null || true)"
if [[ -z "$S3S_FS" && -x "$HOME/.cargo/bin/s3s-fs" ]]; then
  S3S_FS="$HOME/.cargo/bin/s3s-fs"
fi
if [[ -z "$S3S_FS" ]] && ! port_open "$S3_PORT"; then
  command -v cargo >/dev/null 2>&1 || die "s3s-fs missing and cargo is not on PATH"
  echo "services: building the local S3 server s3s-fs with cargo install (the first time only: several minutes on 2 cores)" >&2
  cargo install s3s-fs@0.14.1 --features binary --locked >&2 || die "cargo install s3s-fs failed"
  S3S_FS="$(command -v s3s-fs 2>/dev/null || true)"
  [[ -n "$S3S_FS" ]] || die "s3s-fs still not found after cargo install"
fi

# ---- Redis -----------------------------------------------------------------
redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || true)" == PONG ]]
  else
    port_open 6379
  fi
}
if redis_up; then
  echo "redis: running"
else
  run_clean redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null \
    || die "redis-server failed to start"
  wait_for "$REDIS_WAIT_SECS" redis_up || die "redis did not answer PING on 127.0.0.1:6379 within ${REDIS_WAIT_SECS}s"
  echo "redis: running (started)"
fi

# ---- RabbitMQ --------------------------------------------------------------
if port_open 5672; then
  echo "rabbitmq: running"
else
  # The node may be up but still booting (listeners open last); only start a
  # new one when no node answers at all.
  if ! timeout 20 rabbitmqctl status >/dev/null 2>&1; then
    run_clean rabbitmq-server -detached >"$RABBITMQ_LOG" 2>&1 \
      || { cat "$RABBITMQ_LOG" >&2; die "rabbitmq-server -detached failed"; }
  fi
  wait_for "$RABBITMQ_WAIT_SECS" port_open 5672 || {
    tail -n 20 "$RABBITMQ_LOG" >&2 2>/dev/null || true
    die "rabbitmq did not accept connections on 127.0.0.1:5672 within ${RABBITMQ_WAIT_SECS}s (see /var/log/rabbitmq/)"
  }
  echo "rabbitmq: running (started)"
fi

# The management plugin gives drover-monitor the queues' unacked counts (its HTTP API on
# 127.0.0.1:15672). Enabling it is idempotent and takes effect on the running node.
if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
  timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 \
    || echo "rabbitmq: could not enable rabbitmq_management (drover-monitor then reads queues over AMQP)" >&2
fi

# ---- S3 (s3s-fs) -----------------------------------------------------------
# An s3s-fs left running by an earlier checkout may serve a data directory that has been
# deleted since (a removed clone): every write then fails. Replace such a server.
s3_stale_pid() {
  local pid dir
  for pid in $(pgrep -f "s3s-fs .*--port $S3_PORT" 2>/dev/null); do
    dir="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | tail -n 1)"
    [[ -n "$dir" && ! -d "$dir" ]] && echo "$pid"
    [[ -n "$dir" && -d "$dir" && "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == *"(deleted)"* ]] && echo "$pid"
  done
  return 0
}
stale="$(s3_stale_pid)"
if [[ -n "$stale" ]]; then
  echo "s3: the running s3s-fs serves a deleted directory; restarting it" >&2
  kill $stale 2>/dev/null || true
  wait_for 10 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$S3_PORT) 2>/dev/null" || kill -9 $stale 2>/dev/null || true
fi
if port_open "$S3_PORT"; then
  echo "s3: running"
else
  mkdir -p "$S3_DATA"
  # setsid + nohup: the server outlives this script and its process group.
  launcher=(nohup)
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid nohup); fi
  (
    close_fds
    exec "${launcher[@]}" "$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" \
      --access-key drover --secret-key drover-secret "$S3_DATA"
  ) </dev/null >>"$S3_LOG" 2>&1 &
  s3_pid=$!
  disown "$s3_pid" 2>/dev/null || true
  s3_ready() {
    port_open "$S3_PORT" && return 0
    kill -0 "$s3_pid" 2>/dev/null || { tail -n 20 "$S3_LOG" >&2; die "s3s-fs exited; see $S3_LOG"; }
    return 1
  }
  wait_for "$S3_WAIT_SECS" s3_ready || die "s3s-fs did not accept connections on 127.0.0.1:$S3_PORT within ${S3_WAIT_SECS}s; see $S3_LOG"
  echo "s3: running (started, pid $s3_pid, data $S3_DATA)"
fi
