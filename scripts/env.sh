# shellcheck shell=bash
# Source this (`. scripts/env.sh`) after scripts/services.sh: it points drover at the local
# services and puts drover's binaries on PATH (target/release, which scripts/demo.sh builds;
# set DROVER_BIN_DIR to use others, as the tests do with their debug build). Only exports
# variables; anything already set is kept.
: "${DROVER_AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"; export DROVER_AMQP_URL
: "${DROVER_REDIS_URL:=redis://127.0.0.1:6379/0}"; export DROVER_REDIS_URL
: "${DROVER_S3_ENDPOINT:=http://127.0.0.1:9014}"; export DROVER_S3_ENDPOINT
: "${AWS_ACCESS_KEY_ID:=drover}"; export AWS_ACCESS_KEY_ID
: "${AWS_SECRET_ACCESS_KEY:=drover-secret}"; export AWS_SECRET_ACCESS_KEY
: "${AWS_REGION:=us-east-1}"; export AWS_REGION
# Not root: a worker cannot run tasks as their own users, so it is told to run them as you
# (it says so when it starts). As root, each non-admin task gets a uid of its own.
if [ "$(id -u)" != 0 ]; then : "${DROVER_TASKS_AS_WORKER_USER:=true}"; export DROVER_TASKS_AS_WORKER_USER; fi
_drover_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
: "${DROVER_BIN_DIR:=${CARGO_TARGET_DIR:-$_drover_root/target}/release}"; export DROVER_BIN_DIR
case ":$PATH:" in
  *":$DROVER_BIN_DIR:"*) ;;
  *) PATH="$DROVER_BIN_DIR:$PATH"; export PATH ;;
esac
unset _drover_root
